/*
 * test_sockdir: who may meet in a socket directory, and what they may ask
 * (sockdir.c). The judgements take a stat and credentials, so every case,
 * other users and groups included, is built here without a second user:
 * a private directory (ours, 0700), a shared one (every group bit, none
 * for others, owned by us or root, a group of ours), and the set-ups that
 * must be refused with a reason (open to others, sticky or not; another
 * user's; a group we are not in; not a directory).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fixture.h"

#define ME 1000
#define TEAM 4300
#define OTHER 1001

static const gid_t my_groups[] = {27, TEAM};
static const struct vs_creds me = {.uid = ME, .gid = ME, .groups = my_groups, .n_groups = 2};

static struct stat dir_stat(mode_t mode, uid_t uid, gid_t gid)
{
    struct stat st;
    memset(&st, 0, sizeof st);
    st.st_mode = S_IFDIR | mode;
    st.st_uid = uid;
    st.st_gid = gid;
    return st;
}

/* The verdict on a directory, and the reason's key words when refused. */
static int judge(mode_t mode, uid_t uid, gid_t gid, const struct vs_creds *who,
                 struct vs_sockdir *sd, const char *why_has)
{
    struct stat st = dir_stat(mode, uid, gid);
    char why[512] = "";
    int rc = vs_sockdir_judge("/run/vs", &st, who, sd, why, sizeof why);
    if (why_has)
        assert_non_null(strstr(why, why_has));
    return rc;
}

static void private_dirs(void **state)
{
    (void)state;
    struct vs_sockdir sd;
    assert_int_equal(judge(0700, ME, ME, &me, &sd, NULL), 0);
    assert_false(sd.shared);
    /* a group that may only read, or others: refused (the server makes its
     * own 0700 before it judges) */
    assert_int_equal(judge(0750, ME, TEAM, &me, &sd, "0750"), -EPERM);
    assert_int_equal(judge(0701, ME, ME, &me, &sd, "others may plant"), -EPERM);
    assert_int_equal(judge(0700, OTHER, OTHER, &me, &sd, "belongs to uid 1001"), -EPERM);
    assert_int_equal(judge(0700, 0, 0, &me, &sd, "belongs to uid 0"), -EPERM);
    struct stat st = dir_stat(0700, ME, ME);
    st.st_mode = S_IFLNK | 0777;
    char why[256];
    assert_int_equal(vs_sockdir_judge("/run/vs", &st, &me, &sd, why, sizeof why), -ENOTDIR);
    st.st_mode = S_IFREG | 0700;
    assert_int_equal(vs_sockdir_judge("/run/vs", &st, &me, &sd, why, sizeof why), -ENOTDIR);
}

static void shared_dirs(void **state)
{
    (void)state;
    struct vs_sockdir sd;
    /* root's, for a group of ours (a supplementary one), setgid and sticky */
    assert_int_equal(judge(03770, 0, TEAM, &me, &sd, NULL), 0);
    assert_true(sd.shared);
    assert_int_equal(sd.gid, TEAM);
    /* ours, for our own primary group */
    assert_int_equal(judge(02770, ME, ME, &me, &sd, NULL), 0);
    assert_true(sd.shared && sd.gid == ME);
    /* open to others in any way, sticky or not */
    assert_int_equal(judge(02777, 0, TEAM, &me, &sd, "closed to others"), -EPERM);
    assert_int_equal(judge(03777, 0, TEAM, &me, &sd, "closed to others"), -EPERM);
    assert_int_equal(judge(02771, 0, TEAM, &me, &sd, "closed to others"), -EPERM);
    assert_false(sd.shared);
    /* another user's (not root's) */
    assert_int_equal(judge(02770, OTHER, TEAM, &me, &sd, "neither us"), -EPERM);
    /* a group we are not in; root may use any */
    assert_int_equal(judge(02770, 0, 5555, &me, &sd, "not in"), -EPERM);
    struct vs_creds root = {.uid = 0, .gid = 0};
    assert_int_equal(judge(02770, 0, 5555, &root, &sd, NULL), 0);
    assert_true(sd.shared && sd.gid == 5555);
}

static void who_may_ask(void **state)
{
    (void)state;
    struct vs_sockdir shared = {.shared = true, .gid = TEAM}, private_dir = {0};
    const gid_t member_groups[] = {TEAM};
    struct vs_creds same = {.uid = ME, .gid = ME}, root = {.uid = 0, .gid = 0},
                    member = {.uid = OTHER, .gid = OTHER, .groups = member_groups,
                              .n_groups = 1},
                    primary = {.uid = OTHER, .gid = TEAM},
                    stranger = {.uid = OTHER, .gid = OTHER, .groups = my_groups,
                                .n_groups = 1}; /* group 27 only */
    assert_int_equal(vs_sockdir_access(&shared, ME, &same), VS_ACCESS_FULL);
    assert_int_equal(vs_sockdir_access(&shared, ME, &root), VS_ACCESS_FULL);
    assert_int_equal(vs_sockdir_access(&shared, ME, &member), VS_ACCESS_GROUP);
    assert_int_equal(vs_sockdir_access(&shared, ME, &primary), VS_ACCESS_GROUP);
    assert_int_equal(vs_sockdir_access(&shared, ME, &stranger), VS_ACCESS_NONE);
    /* a private directory has no group: the existing rule */
    assert_int_equal(vs_sockdir_access(&private_dir, ME, &member), VS_ACCESS_NONE);
    assert_int_equal(vs_sockdir_access(NULL, ME, &primary), VS_ACCESS_NONE);
    assert_int_equal(vs_sockdir_access(&private_dir, ME, &root), VS_ACCESS_FULL);

    /* a member reads and asks for relief; it never steers nor maps */
    const enum vs_request_cmd group_ok[] = {VS_REQ_HELLO, VS_REQ_STATS, VS_REQ_PEER,
                                            VS_REQ_RELIEVE};
    const enum vs_request_cmd user_only[] = {VS_REQ_SET, VS_REQ_EVICT, VS_REQ_FREE,
                                             VS_REQ_SHARE, VS_REQ_NONE};
    for (size_t i = 0; i < sizeof group_ok / sizeof group_ok[0]; i++) {
        assert_true(vs_request_allowed(VS_ACCESS_GROUP, group_ok[i]));
        assert_true(vs_request_allowed(VS_ACCESS_FULL, group_ok[i]));
        assert_false(vs_request_allowed(VS_ACCESS_NONE, group_ok[i]));
    }
    for (size_t i = 0; i < sizeof user_only / sizeof user_only[0]; i++) {
        assert_false(vs_request_allowed(VS_ACCESS_GROUP, user_only[i]));
        assert_false(vs_request_allowed(VS_ACCESS_NONE, user_only[i]));
    }
    assert_true(vs_request_allowed(VS_ACCESS_FULL, VS_REQ_SET));
    assert_true(vs_request_allowed(VS_ACCESS_FULL, VS_REQ_SHARE));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(private_dirs),
        cmocka_unit_test(shared_dirs),
        cmocka_unit_test(who_may_ask),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
