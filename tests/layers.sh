#!/bin/sh
# tests/layers.sh: the layer rule of docs/ARCHITECTURE.md, checked.
#
#   core <- driver <- offload <- {hooks, control} <- init
#
# 1. Includes: a file of src/ includes only headers of its own layer or of
#    layers below; hooks and control never include each other's header;
#    offload_internal.h stays inside the offload layer; nothing in src/
#    includes a test header. The tool and the unit tests include only the
#    core (test_tier.c and test_admit.c, which test one file of a higher
#    layer, include that layer's header).
# 2. Calls: from the built objects (nm), every symbol a file of the library
#    uses from another file is defined in its own layer or one below, so
#    the call graph between layers has no cycle.
set -u
src=${VRAMSHIM_SRC:-$(cd "$(dirname "$0")/.." && pwd)}
b=${VRAMSHIM_BUILD:-$src}
bad=0

# These set a variable rather than print, so that the loops below fork no
# subshell per include (thousands of them made this test take minutes on a
# loaded machine).
layer_of() { # a file name -> $layer
	case ${1##*/} in
	vramshim.h | core.h | config.c | log.c | owner.c | registry.c | stats.c | state.c | thread.c | page_index.c | \
		limits.c | budget.c | overhead.c | protocol.c | peer.c | sockdir.c | relief.c | debug.c) layer=core ;;
	driver.h | hooks.def | real.c | dl_real.c) layer=driver ;;
	offload.h | offload_internal.h | offload.c | gate.c | tier.c | chunk.c | hostpool.c | \
		staging.c | touch.c | fence.c | reach.c | pool.c) layer=offload ;;
	hooks.h | hook_table.c | admit.c | hook_mem.c | hook_vmm.c | hook_v1.c | hook_array.c | hook_host.c | hook_info.c | \
		hook_nvml.c | hook_launch.c | hook_copy.c | hook_strided.c | hook_batch.c | hook_bind.c | hook_ptr.c | hook_gpa.c | hook_module.c | hook_memop.c | \
		hook_capture.c | hook_peer.c | hook_pool.c | hook_ctx.c | \
		ipc.c) layer=hooks ;;
	control.h | control.c | control_relief.c) layer=control ;;
	init.h | init.c | hook_exports.c | hook_dlsym.c | dso_handle.c) layer=init ;;
	*) layer=unknown ;;
	esac
}
rank_of() { # a layer -> $rank
	case $1 in core) rank=0 ;; driver) rank=1 ;; offload) rank=2 ;; hooks | control) rank=3 ;;
	init) rank=4 ;; *) rank=9 ;; esac
}
may_use() { # may a file of layer $1 use layer $2?
	[ "$1" = "$2" ] && return 0
	rank_of "$2"
	r2=$rank
	rank_of "$1"
	[ "$r2" -lt "$rank" ]
}
fail() {
	echo "layers: $*"
	bad=1
}

# ---- 1. includes ----------------------------------------------------------
# Every quoted include of the files given, as "file include" lines, read by
# one awk (a sed per file cost a process each).
includes() {
	awk '/^[ \t]*#[ \t]*include[ \t]*"/ {
		inc = $0; sub(/^[^"]*"/, "", inc); sub(/".*/, "", inc); print FILENAME, inc }' "$@"
}
for f in "$src"/src/*.c "$src"/src/*.h; do
	layer_of "$f"
	[ "$layer" = unknown ] && fail "${f##*/} belongs to no layer: add it to tests/layers.sh and docs/ARCHITECTURE.md"
done
includes "$src"/src/*.c "$src"/src/*.h >"${TMPDIR:-/tmp}/layers-inc.$$"
while read -r line; do
	f=${line% *} inc=${line##* } # the path may hold spaces, an include does not
	layer_of "$f"
	mine=$layer
	[ -f "$src/src/$inc" ] || [ -f "$src/include/$inc" ] ||
		{ fail "${f##*/} includes $inc, which is not in src/ or include/"; continue; }
	layer_of "$inc"
	theirs=$layer
	may_use "$mine" "$theirs" ||
		fail "${f##*/} ($mine) includes $inc ($theirs), a layer above or beside its own"
	[ "$inc" = offload_internal.h ] && [ "$mine" != offload ] &&
		fail "${f##*/} ($mine) includes offload_internal.h, private to the offload layer"
done <"${TMPDIR:-/tmp}/layers-inc.$$"
includes "$src"/tools/*.c "$src"/tools/*.h "$src"/tests/unit/*.c "$src"/tests/unit/*.h \
	>"${TMPDIR:-/tmp}/layers-inc.$$"
while read -r line; do
	f=${line% *} inc=${line##* } # the path may hold spaces, an include does not
	case ${f##*/} in test_tier.c | test_admit.c) continue ;; esac
	[ -f "$src/src/$inc" ] || continue
	[ "$inc" = core.h ] || fail "${f##*/} includes $inc: the tool and the unit tests build on core.h alone"
done <"${TMPDIR:-/tmp}/layers-inc.$$"
rm -f "${TMPDIR:-/tmp}/layers-inc.$$"

# ---- 2. calls, from the objects -------------------------------------------
# (not the core's second, debug copy that the unit tests link: the same
# files, whose symbols would look defined twice)
objs=$(ls "$b"/src/.libs/*.o 2>/dev/null | grep -v '/libvramshim_core_debug_la-' || true)
if [ -z "$objs" ] || ! command -v nm >/dev/null 2>&1; then
	echo "layers: no objects under $b/src/.libs (or no nm): call check skipped"
else
	tab=$(mktemp)
	trap 'rm -f "$tab" "$tab.map"' EXIT
	# each object's file name and layer, then one nm over them all (nm -A
	# prefixes each line with its object), not an nm and an awk per object
	for o in $objs; do
		name=${o##*/}
		name=${name%.o}
		name=${name#libvramshim_la-}
		layer_of "$name.c"
		echo "$o: $name $layer"
	done >"$tab.map"
	# shellcheck disable=SC2086 # one word per object
	nm -A $objs | awk 'FILENAME != "-" { f[$1] = $2; l[$1] = $3; next }
		{ o = $1; sub(/:.*/, ":", o) }
		NF == 3 && $2 ~ /^[TDBRCVW]$/ { print "D", $3, f[o], l[o] }
		NF == 3 && $2 == "U" { print "U", $3, f[o], l[o] }' "$tab.map" - >"$tab"
	# may_use again, in awk: one line per (user, symbol) pair would cost a
	# fork each in the shell
	awk 'BEGIN { r["core"] = 0; r["driver"] = 1; r["offload"] = 2; r["hooks"] = 3
	             r["control"] = 3; r["init"] = 4 }
	     function rank(l) { return (l in r) ? r[l] : 9 }
	     # a symbol defined twice is a weak default below and the upper
	     # layer override (vs_init_fn): it belongs to the lower one
	     $1 == "D" { if (!($2 in def) || rank($4) < rank(dl[$2])) { def[$2] = $3; dl[$2] = $4 }
	                 next }
	     { use[NR] = $0 }
	     END { for (i in use) { split(use[i], u, " ")
	             if ((u[2] in def) && def[u[2]] != u[3] && u[4] != dl[u[2]] &&
	                 rank(dl[u[2]]) >= rank(u[4]))
	                 printf "%s.c (%s) uses %s of %s.c (%s), a layer above or beside its own\n",
	                        u[3], u[4], u[2], def[u[2]], dl[u[2]] } }' "$tab" | sort -u >"$tab.out"
	if [ -s "$tab.out" ]; then
		sed 's/^/layers: /' "$tab.out"
		bad=1
	fi
	rm -f "$tab.out"
fi
[ "$bad" -eq 0 ] && echo "layers: every include and every call goes down"
exit "$bad"
