#!/bin/sh
# bench/scrape.sh: does scraping cost the program anything? bench_launch
# (empty-kernel launches back to back, then launches naming backed buffers)
# runs under vramshim alone, while `vramshim exporter` is scraped once a
# second (more often than Prometheus is usually set to), and while it is
# scraped back to back by curl, interleaved, ROUNDS times (default 5).
# Prints the median launches per second of each as a markdown table, the
# ratio to the unscraped run, and how many scrapes found the program.
#
# With --fake (or when no libcuda.so.1 is installed) it runs against the
# test driver, where it shows only that the path runs: the control thread
# that answers a scrape shares the machine's cores with the launch loop.
# Run from the build directory.
set -eu
b=${VRAMSHIM_BUILD:-$(pwd)}
rounds=${ROUNDS:-5}
launches=${LAUNCHES:-10000000}
fake=0
[ "${1:-}" = "--fake" ] && fake=1
ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 ' || fake=1
if [ $fake = 1 ]; then
	export LD_LIBRARY_PATH=$b/tests/fakecuda/.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	export FAKECUDA_MEM=4G
	echo "driver: test driver (tests/fakecuda), $(nproc) cores"
fi
tmp=$(mktemp -d)
export VRAMSHIM_SOCKET_DIR=$tmp/sockets
mkdir -m 0700 "$VRAMSHIM_SOCKET_DIR"
"$b/tools/vramshim" exporter --listen 127.0.0.1:0 >"$tmp/exporter.out" &
exporter=$!
trap 'kill $exporter 2>/dev/null; rm -rf "$tmp"' EXIT
until grep -q '^listening on' "$tmp/exporter.out"; do
	kill -0 $exporter || exit 1
	sleep 0.1
done
url="http://$(awk '{print $3}' "$tmp/exporter.out")/metrics"

scraper() { # INTERVAL OUTFILE: scrape until killed, one line per scrape
	while :; do
		curl -s "$url" | grep -c 'command="[^"]*bench_launch' >>"$2" || true
		sleep "$1"
	done
}
run() { # MODE
	case $1 in
	none) LD_PRELOAD=$b/.libs/libvramshim.so "$b/bench/bench_launch" "$launches" >>"$tmp/none" ;;
	*)
		interval=$([ "$1" = 1hz ] && echo 1 || echo 0)
		scraper "$interval" "$tmp/$1.scrapes" &
		s=$!
		LD_PRELOAD=$b/.libs/libvramshim.so "$b/bench/bench_launch" "$launches" >>"$tmp/$1"
		kill $s
		wait $s 2>/dev/null || true
		;;
	esac
}
for r in $(seq "$rounds"); do
	for mode in none 1hz busy; do
		run $mode
	done
done
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
get() { awk -v k="$1" '$1==k {print $2}' "$tmp/$2" | median; }
range() { awk -v k="$1" '$1==k {print $2}' "$tmp/$2" | sort -n | awk 'NR==1 {lo=$1} {hi=$1} END {print lo "-" hi}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a/b}'; }
seen() { awk '$1>0 {s++} END {printf "%d of %d", s, NR}' "$tmp/$1.scrapes"; }
echo
echo "| launches per second ($launches a run, median of $rounds) | not scraped | its range | scraped 1/s | ratio | scraped back to back | ratio |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for k in launch launch_touch; do
	n=$(get $k none)
	one=$(get $k 1hz)
	hundred=$(get $k busy)
	echo "| $k | $n | $(range $k none) | $one | $(ratio "$one" "$n") | $hundred | $(ratio "$hundred" "$n") |"
done
echo
echo "scrapes that found the program: 1/s $(seen 1hz), back to back $(seen busy)"
