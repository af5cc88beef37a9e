/* Tests for src/config: the embedded default, the documented examples (every .conf file in
 * docs/examples, found from this file's path), the format's corner cases, and one test per
 * error class asserting the exact "file:line: reason" message. */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <glob.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/config.h"

#define SRC "t.conf"

#define PORTAL "[portal p]\naddress = 127.0.0.1\n"                                /* lines 1-2 */
#define TARGET "[target iqn.2026-11.io.isergw:t]\n"                               /* 1 line */
#define LUN    "[lun iqn.2026-11.io.isergw:t:0]\npath = /tmp/t0.img\nsize = 1M\n" /* 3 */
#define BASE   PORTAL TARGET LUN                                                  /* lines 1-6 */

static char err[1024];

static struct config *load(const char *text)
{
        err[0] = '\0';
        return config_load_string(text, SRC, err, sizeof(err));
}

static struct config *load_ok(const char *text)
{
        struct config *cfg = load(text);
        cr_assert_not_null(cfg, "unexpected error: %s", err);
        return cfg;
}

/* The load fails with exactly this message. */
static void expect_error(const char *text, const char *message)
{
        struct config *cfg = load(text);
        cr_assert_null(cfg, "loaded, expected \"%s\"", message);
        cr_assert_str_eq(err, message);
}

/* The load fails with a message starting so (for long reasons). */
static void expect_error_prefix(const char *text, const char *prefix)
{
        struct config *cfg = load(text);
        cr_assert_null(cfg, "loaded, expected \"%s...\"", prefix);
        cr_assert(strncmp(err, prefix, strlen(prefix)) == 0, "got \"%s\", expected \"%s...\"", err,
                  prefix);
}

static unsigned expected_reactors(void)
{
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        return cpus < 1 ? 1 : cpus > CONFIG_MAX_REACTORS ? CONFIG_MAX_REACTORS : (unsigned)cpus;
}

static void examples_dir(char *out, size_t len)
{
        const char *file = __FILE__;
        const char *tail = strstr(file, "tests/unit/test_config.c");
        cr_assert_not_null(tail, "cannot find the source tree from %s", file);
        snprintf(out, len, "%.*sdocs/examples", (int)(tail - file), file);
}

static struct config *load_example(const char *name)
{
        char path[4096];
        examples_dir(path, sizeof(path));
        strncat(path, "/", sizeof(path) - strlen(path) - 1);
        strncat(path, name, sizeof(path) - strlen(path) - 1);
        struct config *cfg = config_load(path, err, sizeof(err));
        cr_assert_not_null(cfg, "%s", err);
        return cfg;
}

static void check_sockaddr_v4(const struct config_portal *portal, const char *ip, uint16_t port)
{
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&portal->addr;
        struct in_addr want;
        cr_assert_eq(inet_pton(AF_INET, ip, &want), 1);
        cr_assert_eq(sin->sin_family, AF_INET);
        cr_assert_eq(sin->sin_addr.s_addr, want.s_addr);
        cr_assert_eq(ntohs(sin->sin_port), port);
        cr_assert_eq(portal->addr_len, sizeof(struct sockaddr_in));
}

/* ---- the default and the examples ---- */

static void check_default_values(const struct config *cfg)
{
        cr_assert_str_eq(cfg->var_dir, "var");
        cr_assert_str_eq(cfg->status_socket, "var/isergw.sock");
        cr_assert_eq(cfg->status_socket_mode, 0660);
        cr_assert_null(cfg->status_socket_group);
        cr_assert_eq(cfg->reactors, expected_reactors());
        cr_assert_eq(cfg->log_level, LOG_LVL_INFO);
        cr_assert_eq(cfg->pool_size, 256ull << 20);
        cr_assert_eq(cfg->line_size, 32u << 10);
        cr_assert_eq(cfg->nop_interval, 30);
        cr_assert_eq(cfg->nop_timeout, 30);
        cr_assert_null(cfg->metrics_listen);
        cr_assert_eq(cfg->iscsi.max_recv_data_segment_length, 262144);
        cr_assert_eq(cfg->iscsi.max_burst_length, 1048576);
        cr_assert_eq(cfg->iscsi.first_burst_length, 262144);
        cr_assert_eq(cfg->iscsi.max_outstanding_r2t, 8);
        cr_assert(cfg->iscsi.immediate_data);
        cr_assert(!cfg->iscsi.initial_r2t);
        cr_assert_null(cfg->discovery_chap.user);
        cr_assert_null(cfg->discovery_chap.secret);
        cr_assert_null(cfg->discovery_chap.mutual_user);
        cr_assert_null(cfg->discovery_chap.mutual_secret);

        cr_assert_eq(cfg->nportals, 1);
        const struct config_portal *portal = &cfg->portals[0];
        cr_assert_str_eq(portal->name, "default");
        cr_assert_str_eq(portal->address, "127.0.0.1");
        cr_assert_eq(portal->port, 3260);
        cr_assert_eq(portal->transport, CONFIG_TRANSPORT_TCP);
        check_sockaddr_v4(portal, "127.0.0.1", 3260);

        cr_assert_eq(cfg->ntargets, 1);
        const struct config_target *t = &cfg->targets[0];
        cr_assert_str_eq(t->name, CONFIG_DEFAULT_TARGET);
        cr_assert_null(t->alias);
        cr_assert_null(t->chap.user);
        cr_assert_null(t->chap.mutual_user);
        cr_assert_eq(t->nportals, 1);
        cr_assert_eq(t->portals[0], portal);
        cr_assert(t->allow_any);
        cr_assert_eq(t->nallow, 0);
        cr_assert_eq(t->nluns, 1);
        const struct config_lun *lun = &t->luns[0];
        cr_assert_eq(lun->number, 0);
        cr_assert_str_eq(lun->path, "var/lun0.img");
        cr_assert_eq(lun->size, 1ull << 30);
        cr_assert_eq(lun->block_size, 512);
        cr_assert_eq(lun->physical_block_size, 512, "physical_block_size defaults to block_size");
        cr_assert(lun->create);
        cr_assert(!lun->read_only);
        cr_assert(lun->write_cache);
        cr_assert(lun->thin);
}

Test(config, default_config)
{
        struct config *cfg = config_default();
        cr_assert_not_null(cfg);
        cr_assert_str_eq(cfg->source, "(default)");
        check_default_values(cfg);
        cr_assert_eq(config_find_target(cfg, CONFIG_DEFAULT_TARGET), &cfg->targets[0]);
        cr_assert(config_target_allows(&cfg->targets[0], "iqn.1994-05.com.redhat:any"));
        config_free(cfg);
}

Test(config, default_conf_example_is_the_default)
{
        struct config *cfg = load_example("default.conf");
        check_default_values(cfg);
        config_free(cfg);
}

Test(config, every_example_loads)
{
        char pattern[4096];
        examples_dir(pattern, sizeof(pattern));
        strncat(pattern, "/*.conf", sizeof(pattern) - strlen(pattern) - 1);
        glob_t g;
        cr_assert_eq(glob(pattern, 0, NULL, &g), 0, "no examples at %s", pattern);
        cr_assert_geq(g.gl_pathc, 3);
        for (size_t i = 0; i < g.gl_pathc; i++) {
                struct config *cfg = config_load(g.gl_pathv[i], err, sizeof(err));
                cr_expect_not_null(cfg, "%s", err);
                config_free(cfg);
        }
        globfree(&g);
}

static void check_full_gateway(const struct config *cfg)
{
        cr_assert_str_eq(cfg->var_dir, "/var/lib/isergw");
        cr_assert_str_eq(cfg->status_socket, "/run/isergw/isergw.sock");
        cr_assert_eq(cfg->status_socket_mode, 0660);
        cr_assert_str_eq(cfg->status_socket_group, "isergw");
        cr_assert_eq(cfg->reactors, 4);
        cr_assert_eq(cfg->log_level, LOG_LVL_INFO);
        cr_assert_eq(cfg->pool_size, 1ull << 30);
        cr_assert_eq(cfg->line_size, 64u << 10);
        cr_assert_eq(cfg->nop_interval, 15);
        cr_assert_eq(cfg->nop_timeout, 10);
        cr_assert_str_eq(cfg->metrics_listen, "127.0.0.1:9650");
        cr_assert_eq(cfg->iscsi.max_recv_data_segment_length, 262144);
        cr_assert_eq(cfg->iscsi.max_burst_length, 1048576);
        cr_assert_eq(cfg->iscsi.first_burst_length, 262144);
        cr_assert_eq(cfg->iscsi.max_outstanding_r2t, 8);
        cr_assert(cfg->iscsi.immediate_data);
        cr_assert(!cfg->iscsi.initial_r2t);
        cr_assert_str_eq(cfg->discovery_chap.user, "discovery");
        cr_assert_str_eq(cfg->discovery_chap.secret, "Disc0very-Secr3t");
        cr_assert_str_eq(cfg->discovery_chap.mutual_user, "isergw");
        cr_assert_str_eq(cfg->discovery_chap.mutual_secret, "Gateway-Answer-1");
}

static void check_full_portals(const struct config *cfg)
{
        cr_assert_eq(cfg->nportals, 4);
        cr_assert_str_eq(cfg->portals[0].name, "lo");
        check_sockaddr_v4(&cfg->portals[0], "127.0.0.1", 3260);
        cr_assert_str_eq(cfg->portals[1].name, "lo6");
        cr_assert_str_eq(cfg->portals[1].address, "::1");
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&cfg->portals[1].addr;
        cr_assert_eq(sin6->sin6_family, AF_INET6);
        cr_assert(IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr));
        cr_assert_eq(ntohs(sin6->sin6_port), 3260);
        cr_assert_str_eq(cfg->portals[2].name, "san");
        cr_assert_eq(cfg->portals[2].transport, CONFIG_TRANSPORT_ISER);
        check_sockaddr_v4(&cfg->portals[2], "192.0.2.10", 3260);
        cr_assert_str_eq(cfg->portals[3].name, "san-tcp");
        cr_assert_eq(cfg->portals[3].transport, CONFIG_TRANSPORT_TCP);
        check_sockaddr_v4(&cfg->portals[3], "192.0.2.10", 3261);
}

static void check_full_db_target(const struct config *cfg)
{
        const struct config_target *t = &cfg->targets[0];
        cr_assert_str_eq(t->name, "iqn.2026-11.com.example:db");
        cr_assert_str_eq(t->alias, "database volumes");
        cr_assert_eq(t->nportals, 2);
        cr_assert_eq(t->portals[0], &cfg->portals[2]);
        cr_assert_eq(t->portals[1], &cfg->portals[3]);
        cr_assert(!t->allow_any);
        cr_assert_eq(t->nallow, 2);
        cr_assert_str_eq(t->allow[0], "iqn.1994-05.com.redhat:db1");
        cr_assert_str_eq(t->allow[1], "iqn.1994-05.com.redhat:db2");
        cr_assert(config_target_allows(t, "iqn.1994-05.com.redhat:db2"));
        cr_assert(config_target_allows(t, "IQN.1994-05.COM.REDHAT:DB1"));
        cr_assert(!config_target_allows(t, "iqn.1994-05.com.redhat:web"));
        cr_assert_str_eq(t->chap.user, "db-initiators");
        cr_assert_str_eq(t->chap.secret, "Db-Initiator-12");
        cr_assert_str_eq(t->chap.mutual_user, "iqn.2026-11.com.example:db");
        cr_assert_str_eq(t->chap.mutual_secret, "Db-Target-Ans-1");
        cr_assert_eq(t->nluns, 2);
        cr_assert_eq(t->luns[0].number, 0);
        cr_assert_str_eq(t->luns[0].path, "/srv/isergw/db-data.img");
        cr_assert_eq(t->luns[0].size, 500ull << 30);
        cr_assert_eq(t->luns[0].block_size, 4096);
        cr_assert(t->luns[0].create && t->luns[0].write_cache && t->luns[0].thin);
        cr_assert(!t->luns[0].read_only);
        cr_assert_eq(t->luns[1].number, 1);
        cr_assert_eq(t->luns[1].size, 20ull << 30);
        cr_assert(!t->luns[1].write_cache);
}

static void check_full_images_target(const struct config *cfg)
{
        const struct config_target *t = &cfg->targets[1];
        cr_assert_str_eq(t->name, "iqn.2026-11.com.example:images");
        cr_assert_null(t->alias);
        cr_assert_null(t->chap.user);
        cr_assert_eq(t->nportals, 2);
        cr_assert_eq(t->portals[0], &cfg->portals[0]);
        cr_assert_eq(t->portals[1], &cfg->portals[1]);
        cr_assert(t->allow_any);
        cr_assert_eq(t->nallow, 0);
        cr_assert_eq(t->nluns, 1);
        const struct config_lun *lun = &t->luns[0];
        cr_assert_str_eq(lun->path, "/dev/disk/by-id/example-golden-images");
        cr_assert_eq(lun->size, 0);
        cr_assert(!lun->create);
        cr_assert(lun->read_only);
        cr_assert(!lun->thin);
        cr_assert(lun->write_cache);
        cr_assert_eq(lun->block_size, 512);
}

Test(config, full_example_parses_to_expected_structs)
{
        struct config *cfg = load_example("full.conf");
        cr_assert(strstr(cfg->source, "docs/examples/full.conf") != NULL);
        check_full_gateway(cfg);
        check_full_portals(cfg);
        cr_assert_eq(cfg->ntargets, 2);
        check_full_db_target(cfg);
        check_full_images_target(cfg);
        cr_assert_eq(config_find_target(cfg, "IQN.2026-11.com.example:IMAGES"), &cfg->targets[1]);
        cr_assert_null(config_find_target(cfg, "iqn.2026-11.com.example:nope"));
        config_free(cfg);
}

Test(config, minimal_example)
{
        struct config *cfg = load_example("minimal.conf");
        cr_assert_eq(cfg->nportals, 1);
        check_sockaddr_v4(&cfg->portals[0], "0.0.0.0", 3260);
        cr_assert_eq(cfg->targets[0].luns[0].size, 100ull << 30);
        config_free(cfg);
}

/* ---- format details ---- */

Test(config, comments_indentation_crlf_and_bom)
{
        struct config *cfg = load_ok("\xef\xbb\xbf# comment\r\n"
                                     "; another\r\n"
                                     "  [portal p]   ; trailing comment\r\n"
                                     "    address = 127.0.0.1 ; inline\r\n"
                                     "\tport=3261\r\n"
                                     "\r\n" TARGET LUN);
        cr_assert_eq(cfg->portals[0].port, 3261);
        cr_assert_str_eq(cfg->portals[0].address, "127.0.0.1");
        cr_assert_eq(cfg->portals[0].line, 3);
        config_free(cfg);
}

Test(config, value_keeps_hash_and_semicolon_without_space)
{
        struct config *cfg = load_ok(BASE "[target iqn.2026-11.io.isergw:u]\n"
                                          "chap_user = u\n"
                                          "chap_secret = abc;def#ghi-jkl\n"
                                          "[lun iqn.2026-11.io.isergw:u:0]\n"
                                          "path = /tmp/u0.img\nsize = 1M\n");
        cr_assert_str_eq(cfg->targets[1].chap.secret, "abc;def#ghi-jkl");
        config_free(cfg);
}

Test(config, long_iscsi_names_in_section_headers)
{
        char name[CONFIG_ISCSI_NAME_MAX + 1];
        int n = snprintf(name, sizeof(name), "iqn.2026-11.io.isergw:");
        memset(name + n, 'x', sizeof(name) - 1 - (size_t)n);
        name[sizeof(name) - 1] = '\0';
        char text[2048];
        snprintf(text, sizeof(text), PORTAL "[target %s]\n[lun %s:7]\npath = /tmp/l\nsize = 1M\n",
                 name, name);
        struct config *cfg = load_ok(text);
        cr_assert_str_eq(cfg->targets[0].name, name);
        cr_assert_eq(cfg->targets[0].luns[0].number, 7);
        config_free(cfg);

        snprintf(text, sizeof(text), PORTAL "[target %sy]\n", name);
        expect_error_prefix(text, "t.conf:3: bad iSCSI name 'iqn.2026-11.io.isergw:xxx");
        cr_assert(strstr(err, "longer than 223 bytes") != NULL);
}

Test(config, names_are_normalised_to_lower_case)
{
        struct config *cfg = load_ok(PORTAL "[target IQN.2026-11.IO.Isergw:T]\n"
                                            "allow = IQN.1994-05.COM.REDHAT:A\n" LUN);
        cr_assert_str_eq(cfg->targets[0].name, "iqn.2026-11.io.isergw:t");
        cr_assert_str_eq(cfg->targets[0].allow[0], "iqn.1994-05.com.redhat:a");
        cr_assert_eq(cfg->targets[0].luns[0].number, 0);
        config_free(cfg);
}

Test(config, luns_before_their_target_and_sorted)
{
        struct config *cfg =
            load_ok(PORTAL "[lun iqn.2026-11.io.isergw:t:9]\npath = /a\nsize = 1M\n"
                           "[lun iqn.2026-11.io.isergw:t:2]\npath = /b\nsize = 1M\n"
                           "[lun iqn.2026-11.io.isergw:t:0]\npath = /c\n"
                           "create = no\n" TARGET);
        const struct config_target *t = &cfg->targets[0];
        cr_assert_eq(t->nluns, 3);
        cr_assert_eq(t->luns[0].number, 0);
        cr_assert_eq(t->luns[0].size, 0);
        cr_assert_eq(t->luns[1].number, 2);
        cr_assert_str_eq(t->luns[1].path, "/b");
        cr_assert_eq(t->luns[2].number, 9);
        cr_assert_eq(t->luns[2].line, 3);
        config_free(cfg);
}

Test(config, list_keys_repeat_and_add_up)
{
        struct config *cfg = load_ok(PORTAL "[portal q]\naddress = 127.0.0.2\n"
                                            "[portal r]\naddress = 127.0.0.3\n"
                                            "[target iqn.2026-11.io.isergw:t]\n"
                                            "portals = r\nportals = p , q\n"
                                            "allow = eui.0123456789ABCDEF, naa.0123456789abcdef\n"
                                            "allow = naa.0123456789abcdef0123456789abcdef\n" LUN);
        const struct config_target *t = &cfg->targets[0];
        cr_assert_eq(t->nportals, 3);
        cr_assert_str_eq(t->portals[0]->name, "r");
        cr_assert_str_eq(t->portals[1]->name, "p");
        cr_assert_str_eq(t->portals[2]->name, "q");
        cr_assert_eq(t->nallow, 3);
        cr_assert_str_eq(t->allow[0], "eui.0123456789abcdef");
        config_free(cfg);
}

Test(config, gateway_values)
{
        struct config *cfg = load_ok("[gateway]\nreactors = auto\nlog_level = DEBUG\n"
                                     "status_socket_mode = 600\nvar_dir = /tmp/v\n"
                                     "pool_size = 3m\nline_size = 1M\nnop_interval = 0\n"
                                     "metrics_listen = [::1]:9650\ninitial_r2t = true\n"
                                     "immediate_data = off\nmax_burst_length = 16777215\n"
                                     "first_burst_length = 16777215\n" BASE);
        cr_assert_eq(cfg->reactors, expected_reactors());
        cr_assert_eq(cfg->log_level, LOG_LVL_DEBUG);
        cr_assert_eq(cfg->status_socket_mode, 0600);
        cr_assert_str_eq(cfg->status_socket, "/tmp/v/isergw.sock");
        cr_assert_eq(cfg->pool_size, 3u << 20);
        cr_assert_eq(cfg->line_size, 1u << 20);
        cr_assert_eq(cfg->nop_interval, 0);
        cr_assert_str_eq(cfg->metrics_listen, "[::1]:9650");
        cr_assert(cfg->iscsi.initial_r2t);
        cr_assert(!cfg->iscsi.immediate_data);
        cr_assert_eq(cfg->iscsi.first_burst_length, 16777215);
        config_free(cfg);
}

Test(config, default_first_burst_follows_a_smaller_max_burst)
{
        struct config *cfg = load_ok("[gateway]\nmax_burst_length = 32K\n" BASE);
        cr_assert_eq(cfg->iscsi.max_burst_length, 32768);
        cr_assert_eq(cfg->iscsi.first_burst_length, 32768);
        config_free(cfg);
}

Test(config, mirror_startup_wait_follows_the_timeout)
{
        struct config *cfg = load_ok("[gateway]\nmirror_timeout_ms = 700\n" BASE);
        cr_assert_eq(cfg->mirror_startup_wait_ms, 700, "the default is mirror_timeout_ms");
        config_free(cfg);
        cfg = load_ok("[gateway]\nmirror_timeout_ms = 700\nmirror_startup_wait_ms = 0\n" BASE);
        cr_assert_eq(cfg->mirror_startup_wait_ms, 0);
        config_free(cfg);
        cfg = load_ok(BASE);
        cr_assert_eq(cfg->mirror_startup_wait_ms, 5000);
        config_free(cfg);
}

Test(config, portal_address_forms)
{
        struct config *cfg = load_ok("[portal a]\naddress = [::]\nport = 3262\n"
                                     "[portal b]\naddress = 0.0.0.0\n"
                                     "[portal c]\naddress = 0.0.0.0\ntransport = iser\n"
                                     "[portal d]\naddress = fe80::1%lo\n" TARGET LUN);
        cr_assert_str_eq(cfg->portals[0].address, "::");
        cr_assert_eq(cfg->portals[0].addr.ss_family, AF_INET6);
        cr_assert_eq(cfg->portals[3].addr.ss_family, AF_INET6);
        cr_assert_neq(((struct sockaddr_in6 *)&cfg->portals[3].addr)->sin6_scope_id, 0);
        cr_assert_eq(cfg->targets[0].nportals, 4); /* default: every portal */
        config_free(cfg);
}

Test(config, long_secret_is_accepted_with_a_warning)
{
        struct config *cfg = load_ok(PORTAL "[target iqn.2026-11.io.isergw:t]\n"
                                            "chap_user = u\n"
                                            "chap_secret = 0123456789abcdefghij\n" LUN);
        cr_assert_eq(strlen(cfg->targets[0].chap.secret), 20);
        config_free(cfg);
}

Test(config, iscsi_name_validity)
{
        cr_assert(config_iscsi_name_valid("iqn.2026-11.io.isergw:default"));
        cr_assert(config_iscsi_name_valid("iqn.2001-04.com.example"));
        cr_assert(config_iscsi_name_valid("IQN.2001-04.COM.EXAMPLE:Disk.1:a-b"));
        cr_assert(config_iscsi_name_valid("eui.02004567A425678D"));
        cr_assert(config_iscsi_name_valid("naa.52004567BA64678D"));
        cr_assert(config_iscsi_name_valid("naa.52004567BA64678D0123456789abcdef"));
        cr_assert(!config_iscsi_name_valid(""));
        cr_assert(!config_iscsi_name_valid("iqn.2001-4.com.example"));
        cr_assert(!config_iscsi_name_valid("iqn.2001-00.com.example"));
        cr_assert(!config_iscsi_name_valid("iqn.2001-04.com..example"));
        cr_assert(!config_iscsi_name_valid("iqn.2001-04.com.example."));
        cr_assert(!config_iscsi_name_valid("iqn.2001-04.com.example:"));
        cr_assert(!config_iscsi_name_valid("iqn.2001-04.com.example:a_b"));
        cr_assert(!config_iscsi_name_valid("iqn.2001-04.com.example:a b"));
        cr_assert(!config_iscsi_name_valid("iqn.2001-04."));
        cr_assert(!config_iscsi_name_valid("eui.02004567A425678"));
        cr_assert(!config_iscsi_name_valid("eui.02004567A425678DX"));
        cr_assert(!config_iscsi_name_valid("naa.0123"));
        cr_assert(!config_iscsi_name_valid("foo.bar"));
        cr_assert_str_eq(config_transport_name(CONFIG_TRANSPORT_ISER), "iser");
        cr_assert_str_eq(config_transport_name(CONFIG_TRANSPORT_TCP), "tcp");
}

/* ---- files ---- */

static void write_file(const char *path, const char *text)
{
        FILE *f = fopen(path, "w");
        cr_assert_not_null(f);
        fputs(text, f);
        fclose(f);
}

Test(config, file_errors_name_the_file)
{
        char path[] = "/tmp/isergw-test-config-XXXXXX";
        int fd = mkstemp(path);
        cr_assert_geq(fd, 0);
        close(fd);
        write_file(path, PORTAL "[target iqn.2026-11.io.isergw:t]\nbogus = 1\n");
        char want[256];
        snprintf(want, sizeof(want), "%s:4: unknown key 'bogus' in [target]", path);
        cr_assert_null(config_load(path, err, sizeof(err)));
        cr_assert_str_eq(err, want);
        unlink(path);

        cr_assert_null(config_load("/nonexistent/isergw.conf", err, sizeof(err)));
        cr_assert_str_eq(err, "/nonexistent/isergw.conf: cannot open: No such file or directory");
        cr_assert_null(config_load("/tmp", err, sizeof(err)));
        cr_assert_str_eq(err, "/tmp: cannot read: Is a directory");
        cr_assert_null(config_load("/nonexistent/isergw.conf", NULL, 0)); /* err optional */
}

/* ---- one test per error class ---- */

Test(config_error, syntax)
{
        expect_error("[gateway]\nreactors\n", "t.conf:2: expected 'key = value'");
        /* the earlier of an inih error and ours wins */
        expect_error("[gateway]\nreactors\nbogus = 1\n", "t.conf:2: expected 'key = value'");
        expect_error("[gateway]\nbogus = 1\nreactors\n",
                     "t.conf:2: unknown key 'bogus' in [gateway]");
        expect_error("[gateway]\n= 4\n", "t.conf:2: missing key name before '='");
        expect_error("reactors = 2\n", "t.conf:1: 'reactors' outside of any section");
        expect_error("[gateway\n", "t.conf:1: missing ']' in section header");
        expect_error("[gateway] x\n", "t.conf:1: unexpected text after ']'");
}

Test(config_error, line_too_long)
{
        char text[512];
        int n = snprintf(text, sizeof(text), "[gateway]\nvar_dir = ");
        memset(text + n, 'v', 300);
        strcpy(text + n + 300, "\n");
        expect_error(text, "t.conf:2: line longer than 199 characters");
}

Test(config_error, unknown_section)
{
        expect_error("[foo]\n",
                     "t.conf:1: unknown section type 'foo' (gateway, portal, target or lun)");
        expect_error("[gateway x]\n", "t.conf:1: [gateway] takes no name");
        expect_error("[portal]\n", "t.conf:1: bad portal name '' (1 to 32 letters, digits, "
                                   "'_', '.' or '-')");
        expect_error("[portal a/b]\n", "t.conf:1: bad portal name 'a/b' (1 to 32 letters, "
                                       "digits, '_', '.' or '-')");
}

Test(config_error, unknown_key)
{
        expect_error("[gateway]\nfoo = 1\n", "t.conf:2: unknown key 'foo' in [gateway]");
        expect_error(PORTAL "size = 1\n", "t.conf:3: unknown key 'size' in [portal]");
        expect_error(BASE "nope = 1\n", "t.conf:7: unknown key 'nope' in [lun]");
}

Test(config_error, duplicate_key)
{
        expect_error("[gateway]\nreactors = 2\nreactors = 3\n",
                     "t.conf:3: duplicate key 'reactors' (first at line 2)");
        expect_error(PORTAL "address = 127.0.0.2\n",
                     "t.conf:3: duplicate key 'address' (first at line 2)");
}

Test(config_error, empty_value)
{
        expect_error("[gateway]\nvar_dir =\n", "t.conf:2: empty value for var_dir");
}

Test(config_error, bad_number)
{
        expect_error(PORTAL "port = abc\n", "t.conf:3: bad number 'abc' for port");
        expect_error(PORTAL "port = -1\n", "t.conf:3: bad number '-1' for port");
        expect_error("[gateway]\nnop_timeout = 1.5\n",
                     "t.conf:2: bad number '1.5' for nop_timeout");
        expect_error("[gateway]\nreactors = many\n",
                     "t.conf:2: bad number 'many' for reactors (or auto)");
        expect_error(
            "[gateway]\npool_size = 12X\n",
            "t.conf:2: bad size '12X' for pool_size (bytes, or a number with K, M, G or T)");
        expect_error("[gateway]\npool_size = 99999999999999999999\n",
                     "t.conf:2: bad size '99999999999999999999' for pool_size (bytes, or a number "
                     "with K, M, G or T)");
        expect_error("[gateway]\npool_size = 17179869184T\n",
                     "t.conf:2: bad size '17179869184T' for pool_size (bytes, or a number with "
                     "K, M, G or T)");
        expect_error("[gateway]\nimmediate_data = maybe\n",
                     "t.conf:2: bad value 'maybe' for immediate_data (yes or no)");
        expect_error("[gateway]\nstatus_socket_mode = 0999\n",
                     "t.conf:2: status_socket_mode must be octal permission bits, e.g. 0660");
        expect_error("[gateway]\nstatus_socket_mode = 01777\n",
                     "t.conf:2: status_socket_mode must be octal permission bits, e.g. 0660");
}

Test(config_error, out_of_range)
{
        expect_error(PORTAL "port = 0\n", "t.conf:3: port must be between 1 and 65535");
        expect_error(PORTAL "port = 65536\n", "t.conf:3: port must be between 1 and 65535");
        expect_error("[gateway]\nreactors = 0\n", "t.conf:2: reactors must be between 1 and 64");
        expect_error("[gateway]\nreactors = 65\n", "t.conf:2: reactors must be between 1 and 64");
        expect_error("[gateway]\npool_size = 2T\n",
                     "t.conf:2: pool_size must be between 1M and 1T");
        expect_error("[gateway]\nline_size = 2K\n",
                     "t.conf:2: line_size must be between 4K and 1M");
        expect_error("[gateway]\nline_size = 48K\n", "t.conf:2: line_size must be a power of two");
        expect_error("[gateway]\nnop_interval = 3601\n",
                     "t.conf:2: nop_interval must be between 0 and 3600");
        expect_error("[gateway]\nmax_recv_data_segment_length = 511\n",
                     "t.conf:2: max_recv_data_segment_length must be between 512 and 16777215");
        expect_error("[gateway]\nmax_burst_length = 16M\n",
                     "t.conf:2: max_burst_length must be between 512 and 16777215");
        expect_error("[gateway]\nmax_outstanding_r2t = 0\n",
                     "t.conf:2: max_outstanding_r2t must be between 1 and 65535");
        expect_error(BASE "block_size = 1024\n", "t.conf:7: block_size must be 512 or 4096");
        expect_error(PORTAL TARGET "[lun iqn.2026-11.io.isergw:t:16384]\n",
                     "t.conf:4: lun number must be between 0 and 16383");
}

Test(config, physical_block_size)
{
        struct config *cfg = load_ok(BASE "physical_block_size = 4096\n");
        cr_assert_eq(cfg->targets[0].luns[0].block_size, 512);
        cr_assert_eq(cfg->targets[0].luns[0].physical_block_size, 4096);
        config_free(cfg);
        cfg = load_ok(BASE "block_size = 4096\n");
        cr_assert_eq(cfg->targets[0].luns[0].physical_block_size, 4096, "defaults to block_size");
        config_free(cfg);
        cfg = load_ok(BASE "physical_block_size = 512\n");
        cr_assert_eq(cfg->targets[0].luns[0].physical_block_size, 512);
        config_free(cfg);
        cfg = load_ok(BASE "physical_block_size = 4K\n"); /* sizes take suffixes */
        cr_assert_eq(cfg->targets[0].luns[0].physical_block_size, 4096);
        config_free(cfg);
}

Test(config, removable)
{
        struct config *cfg = load_ok(BASE "removable = yes\n");
        cr_assert(cfg->targets[0].luns[0].removable);
        config_free(cfg);
        cfg = load_ok(BASE "removable = no\n");
        cr_assert_not(cfg->targets[0].luns[0].removable);
        config_free(cfg);
        cfg = load_ok(BASE);
        cr_assert_not(cfg->targets[0].luns[0].removable, "defaults to no");
        config_free(cfg);
        expect_error(BASE "removable = ejectable\n",
                     "t.conf:7: bad value 'ejectable' for removable (yes or no)");
        expect_error(PORTAL TARGET "removable = yes\n",
                     "t.conf:4: unknown key 'removable' in [target]"); /* a LUN key */
}

Test(config_error, physical_block_size)
{
        const char *const bad[] = {"1024", "2048", "8192", "0", "-512", "4097", "huge"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char text[512];
                snprintf(text, sizeof(text), BASE "physical_block_size = %s\n", bad[i]);
                expect_error_prefix(text, "t.conf:7: ");
                cr_assert(strstr(err, "physical_block_size"), "%s: %s", bad[i], err);
        }
        expect_error(BASE "physical_block_size = 1024\n",
                     "t.conf:7: physical_block_size must be 512 or 4096");
        expect_error(BASE "block_size = 4096\nphysical_block_size = 512\n",
                     "t.conf:8: physical_block_size is smaller than block_size (4096)");
}

Test(config_error, inconsistent_gateway_values)
{
        expect_error("[gateway]\nfirst_burst_length = 2M\n",
                     "t.conf:2: first_burst_length (2097152) exceeds max_burst_length (1048576)");
        expect_error("[gateway]\nmax_burst_length = 32K\nfirst_burst_length = 64K\n",
                     "t.conf:3: first_burst_length (65536) exceeds max_burst_length (32768)");
        expect_error("[gateway]\npool_size = 1025K\n",
                     "t.conf:2: pool_size is not a multiple of line_size");
        expect_error("[gateway]\npool_size = 3M\nline_size = 1M\nline_size = 2M\n",
                     "t.conf:4: duplicate key 'line_size' (first at line 3)");
        /* checked when the next section starts, before anything about that section */
        expect_error("[gateway]\npool_size = 1536K\nline_size = 1M\nreactors = 1\n"
                     "[gateway]\n",
                     "t.conf:2: pool_size is not a multiple of line_size");
}

Test(config_error, bad_enum_values)
{
        expect_error("[gateway]\nlog_level = loud\n",
                     "t.conf:2: bad log_level 'loud' (error, warn, info or debug)");
        expect_error(PORTAL "transport = udp\n", "t.conf:3: bad transport 'udp' (tcp or iser)");
        expect_error("[gateway]\nstatus_socket_group = wheel staff\n",
                     "t.conf:2: bad group 'wheel staff' for status_socket_group (a group name "
                     "or number)");
}

Test(config_error, bad_metrics_listen)
{
        static const char *const bad[] = {"127.0.0.1",      "::1:9650",         "127.0.0.1:0",
                                          "localhost:9650", "[127.0.0.1]:9650", ":9650",
                                          "[::1]:70000"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char text[128], want[256];
                snprintf(text, sizeof(text), "[gateway]\nmetrics_listen = %s\n", bad[i]);
                snprintf(want, sizeof(want),
                         "t.conf:2: bad metrics_listen '%s' (IPV4:PORT or [IPV6]:PORT)", bad[i]);
                expect_error(text, want);
        }
}

Test(config_error, status_socket_too_long)
{
        char text[512], want[512], dir[151];
        memset(dir, 'd', 150);
        dir[150] = '\0';
        snprintf(text, sizeof(text), "[gateway]\nreactors = 1\nvar_dir = %s\n" BASE, dir);
        snprintf(want, sizeof(want),
                 "t.conf:3: status_socket '%s/isergw.sock' is longer than 107 "
                 "bytes",
                 dir);
        expect_error(text, want);
}

Test(config_error, duplicates)
{
        expect_error("[gateway]\n[gateway]\n",
                     "t.conf:2: duplicate section [gateway] (first at line 1)");
        expect_error(PORTAL "[portal p]\n", "t.conf:3: duplicate portal 'p' (first at line 1)");
        expect_error(PORTAL TARGET "[target IQN.2026-11.io.isergw:T]\n",
                     "t.conf:4: duplicate target 'IQN.2026-11.io.isergw:T' (first at line 3)");
        expect_error(BASE "[lun iqn.2026-11.io.isergw:T:0]\n",
                     "t.conf:7: duplicate lun iqn.2026-11.io.isergw:T:0 (first at line 4)");
        expect_error(PORTAL "[portal q]\naddress = 127.0.0.1\n" TARGET LUN,
                     "t.conf:3: portal 'q' overlaps portal 'p' (line 1): same transport and "
                     "port, and the same or a wildcard address");
        expect_error(PORTAL "[portal q]\naddress = 0.0.0.0\n" TARGET LUN,
                     "t.conf:3: portal 'q' overlaps portal 'p' (line 1): same transport and "
                     "port, and the same or a wildcard address");
        expect_error(BASE "[lun iqn.2026-11.io.isergw:t:1]\npath = /tmp/t0.img\nsize = 1M\n",
                     "t.conf:8: path '/tmp/t0.img' is already used by lun "
                     "iqn.2026-11.io.isergw:t:0 (line 4)");
        expect_error(PORTAL "[target iqn.2026-11.io.isergw:t]\nportals = p, p\n" LUN,
                     "t.conf:4: portal 'p' listed twice");
        expect_error(PORTAL "[target iqn.2026-11.io.isergw:t]\nallow = eui.0123456789abcdef\n"
                            "allow = EUI.0123456789ABCDEF\n" LUN,
                     "t.conf:5: initiator 'EUI.0123456789ABCDEF' listed twice");
}

Test(config_error, lun_for_unknown_target)
{
        expect_error(BASE "[lun iqn.2026-11.io.isergw:other:0]\npath = /x\nsize = 1M\n",
                     "t.conf:7: lun for unknown target 'iqn.2026-11.io.isergw:other'");
        expect_error(PORTAL TARGET "[lun iqn.2026-11.io.isergw:t]\n",
                     "t.conf:4: [lun] needs a name of the form TARGET:NUMBER");
        expect_error(PORTAL TARGET "[lun iqn.2026-11.io.isergw:t:x]\n",
                     "t.conf:4: [lun] needs a name of the form TARGET:NUMBER");
}

Test(config_error, lun_incomplete)
{
        expect_error(PORTAL TARGET "[lun iqn.2026-11.io.isergw:t:0]\npath = /x\n",
                     "t.conf:4: lun 0: size missing (required when create = yes)");
        expect_error(PORTAL TARGET "[lun iqn.2026-11.io.isergw:t:0]\nsize = 1M\n",
                     "t.conf:4: lun 0 has no path");
        expect_error(PORTAL TARGET "[lun iqn.2026-11.io.isergw:t:0]\npath = /x\nsize = 1000\n",
                     "t.conf:6: size is not a multiple of block_size (512)");
        expect_error(PORTAL TARGET "[lun iqn.2026-11.io.isergw:t:0]\npath = /x\nsize = 6K\n"
                                   "block_size = 4096\n",
                     "t.conf:6: size is not a multiple of block_size (4096)");
        expect_error(PORTAL TARGET "[lun iqn.2026-11.io.isergw:t:0]\npath = /x\nsize = 0\n",
                     "t.conf:6: size must be between 1 and 9223372036854775807");
}

Test(config_error, nothing_to_serve)
{
        expect_error(PORTAL, "t.conf:2: no [target] section");
        expect_error(TARGET LUN, "t.conf:4: no [portal] section");
        expect_error("", "t.conf:1: no [portal] section");
        expect_error(PORTAL TARGET "\n# end\n", "t.conf:3: target 'iqn.2026-11.io.isergw:t' has "
                                                "no lun");
}

Test(config_error, bad_portal_address)
{
        expect_error("[portal p]\nport = 3260\n", "t.conf:1: portal 'p' has no address");
        static const char *const bad[] = {"300.1.1.1", "localhost", "127.1",
                                          "::1::2",    "[::1",      "1.2.3.4:3260"};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char text[128], want[256];
                snprintf(text, sizeof(text), "[portal p]\naddress = %s\n", bad[i]);
                snprintf(want, sizeof(want), "t.conf:2: bad address '%s' (an IPv4 or IPv6 literal)",
                         bad[i]);
                expect_error(text, want);
        }
        expect_error(PORTAL "[target iqn.2026-11.io.isergw:t]\nportals = p, nope\n" LUN,
                     "t.conf:4: unknown portal 'nope'");
        expect_error(PORTAL "[target iqn.2026-11.io.isergw:t]\nportals = p,\n" LUN,
                     "t.conf:4: empty item in portals");
}

Test(config_error, bad_iscsi_names)
{
        expect_error(PORTAL "[target iqn.2026-13.io.isergw:t]\n",
                     "t.conf:3: bad iSCSI name 'iqn.2026-13.io.isergw:t': the month of the date "
                     "must be 01 to 12");
        expect_error(PORTAL "[target iqn.26-11.io.isergw]\n",
                     "t.conf:3: bad iSCSI name 'iqn.26-11.io.isergw': iqn. must be followed by "
                     "a yyyy-mm. date");
        expect_error(PORTAL "[target iqn.2026-11.:t]\n",
                     "t.conf:3: bad iSCSI name 'iqn.2026-11.:t': the naming authority (a "
                     "reversed domain name) is missing or ends in '.'");
        expect_error(PORTAL "[target iqn.2026-11.io.isergw:my_disk]\n",
                     "t.conf:3: bad iSCSI name 'iqn.2026-11.io.isergw:my_disk': only letters, "
                     "digits, '-', '.' and ':' are allowed");
        expect_error(PORTAL "[target eui.1234]\n",
                     "t.conf:3: bad iSCSI name 'eui.1234': eui. needs 16 hex digits");
        expect_error(PORTAL "[target naa.123456789abcdef012]\n",
                     "t.conf:3: bad iSCSI name 'naa.123456789abcdef012': naa. needs 16 or 32 "
                     "hex digits");
        expect_error(PORTAL "[target disk0]\n",
                     "t.conf:3: bad iSCSI name 'disk0': must start with iqn., eui. or naa.");
        expect_error(PORTAL "[target iqn.2026-11.io.isergw:t]\nallow = iqn.x\n",
                     "t.conf:4: bad iSCSI name 'iqn.x': iqn. must be followed by a yyyy-mm. "
                     "date");
        expect_error(PORTAL "[target iqn.2026-11.io.isergw:t]\nallow = *, eui.0123456789abcdef\n",
                     "t.conf:4: allow: '*' cannot be combined with names");
        expect_error(PORTAL "[target iqn.2026-11.io.isergw:t]\nallow = eui.0123456789abcdef\n"
                            "allow = *\n",
                     "t.conf:5: allow: '*' cannot be combined with names");
}

#define CHAP_TARGET PORTAL "[target iqn.2026-11.io.isergw:t]\n" /* lines 1-3 */

Test(config_error, chap_secret_length)
{
        expect_error(CHAP_TARGET "chap_user = u\nchap_secret = short-secr\n" LUN,
                     "t.conf:5: chap_secret must be at least 12 bytes (RFC 7143: 96 bits unless "
                     "IPsec is used)");
        cr_assert(strstr(err, "short-secr") == NULL);
        expect_error("[gateway]\ndiscovery_mutual_secret = 12345678901\n",
                     "t.conf:2: discovery_mutual_secret must be at least 12 bytes (RFC 7143: 96 "
                     "bits unless IPsec is used)");
        char text[512];
        char secret[257];
        memset(secret, 's', 256);
        secret[256] = '\0';
        snprintf(text, sizeof(text), "[gateway]\ndiscovery_chap_secret = %s\n", secret);
        expect_error(text, "t.conf:2: line longer than 199 characters");
        cr_assert(strstr(err, "sss") == NULL);
}

Test(config_error, chap_incomplete)
{
        expect_error(CHAP_TARGET "chap_user = u\n" LUN, "t.conf:4: chap_user needs chap_secret");
        expect_error(CHAP_TARGET "chap_secret = 0123456789ab\n" LUN,
                     "t.conf:4: chap_secret needs chap_user");
        expect_error(CHAP_TARGET "chap_user = u\nchap_secret = 0123456789ab\n"
                                 "mutual_user = t\n" LUN,
                     "t.conf:6: mutual_user needs mutual_secret");
        expect_error(CHAP_TARGET "mutual_user = t\nmutual_secret = 0123456789ab\n" LUN,
                     "t.conf:4: mutual_user needs chap_user: mutual CHAP follows the "
                     "initiator's authentication");
        expect_error("[gateway]\ndiscovery_chap_user = d\n" BASE,
                     "t.conf:2: discovery_chap_user needs discovery_chap_secret");
}

Test(config_error, mutual_secret_reuse)
{
        expect_error(CHAP_TARGET "chap_user = u\nchap_secret = same-secret-1\n"
                                 "mutual_user = t\nmutual_secret = same-secret-1\n" LUN,
                     "t.conf:7: mutual_secret must differ from chap_secret");
        cr_assert(strstr(err, "same-secret-1") == NULL);
        expect_error("[gateway]\ndiscovery_chap_user = d\ndiscovery_chap_secret = "
                     "other-secret-9\n" CHAP_TARGET "chap_user = u\nchap_secret = initiator-sec\n"
                     "mutual_user = t\nmutual_secret = other-secret-9\n" LUN,
                     "t.conf:10: mutual secret equals the chap secret at line 3: a secret must "
                     "not authenticate both initiators and targets");
        cr_assert(strstr(err, "other-secret-9") == NULL);
        expect_error(
            "[gateway]\ndiscovery_chap_user = d\ndiscovery_chap_secret = init-secret-1\n"
            "discovery_mutual_user = g\ndiscovery_mutual_secret = target-secr-2\n" CHAP_TARGET
            "chap_user = u\nchap_secret = target-secr-2\n" LUN,
            "t.conf:5: mutual secret equals the chap secret at line 10: a secret must "
            "not authenticate both initiators and targets");
}

Test(config_error, control_characters_and_lengths)
{
        expect_error(CHAP_TARGET "alias = a\tb\n", "t.conf:4: alias contains control characters");
        char text[512], alias[200];
        memset(alias, 'a', 180);
        alias[180] = '\0';
        snprintf(text, sizeof(text), CHAP_TARGET "alias = %s\nalias = %s\n", alias, alias);
        expect_error(text, "t.conf:5: duplicate key 'alias' (first at line 4)");
}

Test(config, cache_and_backend_keys)
{
        struct config *cfg = load_ok("[gateway]\ndirty_high_water = 60\ndirty_low_water = 10\n"
                                     "dirty_hard_limit = 90\ndirty_max_age_ms = 250\n"
                                     "shutdown_flush_timeout = 5\n" BASE
                                     "bypass_threshold = 1M\nfault_injection = yes\n"
                                     "[lun iqn.2026-11.io.isergw:t:1]\nbackend = iscsi\n"
                                     "url = iscsi://127.0.0.1:3261/iqn.2001-04.com.example:x/0\n");
        cr_assert_eq(cfg->dirty_high_water, 60);
        cr_assert_eq(cfg->dirty_low_water, 10);
        cr_assert_eq(cfg->dirty_hard_limit, 90);
        cr_assert_eq(cfg->dirty_max_age_ms, 250);
        cr_assert_eq(cfg->shutdown_flush_timeout, 5);
        cr_assert_str_eq(cfg->backend_initiator_name, "iqn.2026-11.io.isergw:gateway");
        const struct config_target *t = &cfg->targets[0];
        cr_assert_eq(t->nluns, 2);
        cr_assert_eq(t->luns[0].backend, CONFIG_BACKEND_FILE);
        cr_assert_eq(t->luns[0].bypass_threshold, 1u << 20);
        cr_assert(t->luns[0].fault_injection);
        cr_assert_eq(t->luns[1].backend, CONFIG_BACKEND_ISCSI);
        cr_assert_null(t->luns[1].path);
        cr_assert_str_eq(t->luns[1].url, "iscsi://127.0.0.1:3261/iqn.2001-04.com.example:x/0");
        config_free(cfg);
        cfg = load_ok(BASE);
        cr_assert_eq(cfg->dirty_high_water, 50);
        cr_assert_eq(cfg->dirty_low_water, 25);
        cr_assert_eq(cfg->dirty_hard_limit, 80);
        cr_assert_eq(cfg->targets[0].luns[0].bypass_threshold, 0);
        cr_assert_not(cfg->targets[0].luns[0].fault_injection);
        config_free(cfg);
}

Test(config_error, cache_and_backend_keys)
{
        expect_error("[gateway]\ndirty_low_water = 50\n" BASE,
                     "t.conf:2: dirty_low_water (50) must be below dirty_high_water (50)");
        expect_error("[gateway]\ndirty_high_water = 90\n" BASE,
                     "t.conf:2: dirty_hard_limit (80) is below dirty_high_water (90)");
        expect_error("[gateway]\ndirty_hard_limit = 99\n" BASE,
                     "t.conf:2: dirty_hard_limit must be between 1 and 95");
        expect_error("[gateway]\nwrite_log = /tmp/x.log\nwrite_log_size = 8M\n" BASE,
                     "t.conf:3: write_log_size must be a multiple of 512 and at least 16M");
        expect_error("[gateway]\nwrite_log_size = 17000000\n" BASE,
                     "t.conf:2: write_log_size must be a multiple of 512 and at least 16M");
        expect_error("[gateway]\nbackend_initiator_name = nope\n" BASE,
                     "t.conf:2: backend_initiator_name is not a valid iSCSI name");
        expect_error(BASE "backend = tape\n", "t.conf:7: bad backend 'tape' (file or iscsi)");
        expect_error(PORTAL TARGET "[lun iqn.2026-11.io.isergw:t:0]\nbackend = iscsi\n",
                     "t.conf:4: lun 0: backend iscsi needs url");
        expect_error(PORTAL TARGET "[lun iqn.2026-11.io.isergw:t:0]\nbackend = iscsi\n"
                                   "url = http://x/\n",
                     "t.conf:6: lun 0: url must look like iscsi://HOST[:PORT]/IQN/LUN");
        expect_error(BASE "url = iscsi://h/iqn.2001-04.com.example:x/0\n",
                     "t.conf:7: lun 0: url is for backend iscsi");
        expect_error(BASE "bypass_threshold = 2G\n",
                     "t.conf:7: bypass_threshold must be between 0 and 1G");
}
