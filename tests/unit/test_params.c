/* params: every negotiation rule type of RFC 7143 section 6.2 / 13 and the iSER keys. */
#include <criterion/criterion.h>
#include <string.h>

#include "iscsi/params.h"
#include "iscsi/pdu.h"

/* One negotiation under test and the parsed text of its last answer. */
struct fixture {
        struct iscsi_target_limits limits;
        struct iscsi_negotiation neg;
        struct textbuf rsp;
        struct textkv_list answer;
        struct iscsi_neg_failure fail;
};

static void fx_init(struct fixture *f, bool is_iser)
{
        memset(f, 0, sizeof(*f));
        iscsi_target_limits_default(&f->limits);
        iscsi_neg_init(&f->neg, &f->limits, is_iser);
        textbuf_init(&f->rsp);
}

static void fx_reinit(struct fixture *f, bool is_iser)
{
        iscsi_neg_init(&f->neg, &f->limits, is_iser);
}

static void fx_fini(struct fixture *f)
{
        textkv_list_free(&f->answer);
        textbuf_free(&f->rsp);
}

/* Sends one request (pairs separated by NULs, len including the final NUL) and parses the
 * answer. Returns iscsi_neg_process's result. */
static int fx_send_bytes(struct fixture *f, const char *text, size_t len)
{
        struct textkv_list req;
        cr_assert_eq(textkv_parse((const uint8_t *)text, len, &req), TEXTKV_OK);
        textbuf_reset(&f->rsp);
        textkv_list_free(&f->answer);
        int rc = iscsi_neg_process(&f->neg, &req, &f->rsp, &f->fail);
        textkv_list_free(&req);
        cr_assert_eq(textkv_parse((const uint8_t *)f->rsp.data, f->rsp.len, &f->answer), TEXTKV_OK);
        return rc;
}

#define SEND(f, lit) fx_send_bytes(f, lit, sizeof(lit))

static const char *ans(struct fixture *f, const char *key)
{
        return textkv_find(&f->answer, key);
}

static void expect_answer(struct fixture *f, const char *key, const char *value)
{
        const char *got = ans(f, key);
        cr_assert_not_null(got, "no answer for %s", key);
        cr_assert_str_eq(got, value, "%s: got %s, want %s", key, got, value);
}

/* ---- list ---- */

Test(params_list, digest_picks_first_supported_in_initiator_order)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "HeaderDigest=CRC32C,None\0DataDigest=None,CRC32C"), 0);
        expect_answer(&f, "HeaderDigest", "CRC32C");
        expect_answer(&f, "DataDigest", "None");
        cr_assert_eq(f.neg.params.header_digest, ISCSI_DIGEST_CRC32C);
        cr_assert_eq(f.neg.params.data_digest, ISCSI_DIGEST_NONE);
        fx_fini(&f);
}

Test(params_list, unknown_items_skipped_and_no_match_rejected)
{
        struct fixture f;
        fx_init(&f, false);
        f.limits.data_digest_crc32c = false;
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "HeaderDigest=MD5,None\0DataDigest=CRC32C"), 0);
        expect_answer(&f, "HeaderDigest", "None");
        expect_answer(&f, "DataDigest", "Reject");
        cr_assert_eq(f.neg.params.data_digest, ISCSI_DIGEST_NONE);
        fx_fini(&f);
}

Test(params_list, task_reporting_only_rfc3720)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "TaskReporting=ResponseFence,RFC3720"), 0);
        expect_answer(&f, "TaskReporting", "RFC3720");
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "TaskReporting=FastAbort"), 0);
        expect_answer(&f, "TaskReporting", "Reject");
        fx_fini(&f);
}

/* ---- numerical minimum / maximum ---- */

Test(params_num, minimum_takes_the_smaller)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "MaxBurstLength=1048576\0MaxOutstandingR2T=8\0"
                              "ErrorRecoveryLevel=2\0MaxConnections=4\0DefaultTime2Retain=0"),
                     0);
        expect_answer(&f, "MaxBurstLength", "262144");
        expect_answer(&f, "MaxOutstandingR2T", "1");
        expect_answer(&f, "ErrorRecoveryLevel", "0");
        expect_answer(&f, "MaxConnections", "1");
        expect_answer(&f, "DefaultTime2Retain", "0");
        cr_assert_eq(f.neg.params.max_burst_length, 262144);
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "MaxBurstLength=65536"), 0);
        expect_answer(&f, "MaxBurstLength", "65536");
        cr_assert_eq(f.neg.params.max_burst_length, 65536);
        fx_fini(&f);
}

Test(params_num, maximum_takes_the_larger)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "DefaultTime2Wait=0"), 0);
        expect_answer(&f, "DefaultTime2Wait", "2");
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "DefaultTime2Wait=10"), 0);
        expect_answer(&f, "DefaultTime2Wait", "10");
        cr_assert_eq(f.neg.params.default_time2wait, 10);
        fx_fini(&f);
}

Test(params_num, hex_accepted_bad_syntax_and_range_rejected)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "MaxBurstLength=0x10000\0FirstBurstLength=100\0"
                              "DefaultTime2Wait=3601\0ErrorRecoveryLevel=3\0"
                              "MaxOutstandingR2T=0\0DefaultTime2Retain=020"),
                     0);
        expect_answer(&f, "MaxBurstLength", "65536");
        expect_answer(&f, "FirstBurstLength", "Reject");
        expect_answer(&f, "DefaultTime2Wait", "Reject");
        expect_answer(&f, "ErrorRecoveryLevel", "Reject");
        expect_answer(&f, "MaxOutstandingR2T", "Reject");
        expect_answer(&f, "DefaultTime2Retain", "Reject"); /* leading zero is not decimal */
        cr_assert_eq(f.neg.params.first_burst_length, 65536, "default kept");
        cr_assert_eq(f.neg.params.default_time2wait, 2);
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "MaxBurstLength=lots\0MaxConnections=99999999999999999999999"), 0);
        expect_answer(&f, "MaxBurstLength", "Reject");
        expect_answer(&f, "MaxConnections", "Reject");
        fx_fini(&f);
}

Test(params_num, first_burst_never_exceeds_max_burst)
{
        struct fixture f;
        fx_init(&f, false);
        /* FirstBurstLength comes first: the order of keys must not matter */
        cr_assert_eq(SEND(&f, "FirstBurstLength=65536\0InitialR2T=No\0MaxBurstLength=16384"), 0);
        expect_answer(&f, "MaxBurstLength", "16384");
        expect_answer(&f, "FirstBurstLength", "16384");
        fx_fini(&f);
}

Test(params_num, protocol_level_min_with_1)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "iSCSIProtocolLevel=2"), 0);
        expect_answer(&f, "iSCSIProtocolLevel", "1");
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "iSCSIProtocolLevel=0"), 0);
        expect_answer(&f, "iSCSIProtocolLevel", "0");
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "iSCSIProtocolLevel=32"), 0);
        expect_answer(&f, "iSCSIProtocolLevel", "Reject");
        fx_fini(&f);
}

/* ---- boolean AND / OR ---- */

Test(params_bool, and_result)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "ImmediateData=Yes"), 0);
        expect_answer(&f, "ImmediateData", "Yes");
        f.limits.immediate_data = false;
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "ImmediateData=Yes"), 0);
        expect_answer(&f, "ImmediateData", "No");
        cr_assert_not(f.neg.params.immediate_data);
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "ImmediateData=yes"), 0);
        expect_answer(&f, "ImmediateData", "Reject");
        fx_fini(&f);
}

Test(params_bool, or_result)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "InitialR2T=No\0DataPDUInOrder=No\0DataSequenceInOrder=Yes"), 0);
        expect_answer(&f, "InitialR2T", "Yes"); /* we want R2T */
        expect_answer(&f, "DataPDUInOrder", "Yes");
        expect_answer(&f, "DataSequenceInOrder", "Yes");
        f.limits.initial_r2t = false;
        f.limits.data_pdu_in_order = false;
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "InitialR2T=No\0DataPDUInOrder=No"), 0);
        expect_answer(&f, "InitialR2T", "No");
        expect_answer(&f, "DataPDUInOrder", "No");
        cr_assert_not(f.neg.params.initial_r2t);
        fx_fini(&f);
}

Test(params_bool, rdma_extensions_needs_an_iser_connection)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "RDMAExtensions=Yes"), 0);
        expect_answer(&f, "RDMAExtensions", "No");
        cr_assert_not(f.neg.params.rdma_extensions);
        fx_reinit(&f, true);
        cr_assert_eq(SEND(&f, "RDMAExtensions=Yes"), 0);
        expect_answer(&f, "RDMAExtensions", "Yes");
        cr_assert(f.neg.params.rdma_extensions);
        fx_fini(&f);
}

/* ---- declarative ---- */

Test(params_decl, max_recv_dsl_is_declared_not_answered)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(f.neg.params.max_send_dsl, 8192, "RFC default");
        cr_assert_eq(SEND(&f, "MaxRecvDataSegmentLength=65536"), 0);
        cr_assert_null(ans(&f, "MaxRecvDataSegmentLength"));
        cr_assert_eq(f.neg.params.max_send_dsl, 65536);
        cr_assert_eq(f.neg.params.max_recv_dsl, 8192, "ours is 8192 until declared");
        textbuf_reset(&f.rsp);
        iscsi_neg_add_target_keys(&f.neg, &f.rsp);
        struct textkv_list l;
        cr_assert_eq(textkv_parse((const uint8_t *)f.rsp.data, f.rsp.len, &l), TEXTKV_OK);
        cr_assert_str_eq(textkv_find(&l, "MaxRecvDataSegmentLength"), "262144");
        textkv_list_free(&l);
        cr_assert_eq(f.neg.params.max_recv_dsl, 262144);
        /* declared once only */
        textbuf_reset(&f.rsp);
        iscsi_neg_add_target_keys(&f.neg, &f.rsp);
        cr_assert_eq(f.rsp.len, 0);
        fx_fini(&f);
}

Test(params_decl, max_recv_dsl_range)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "MaxRecvDataSegmentLength=511"), 0);
        expect_answer(&f, "MaxRecvDataSegmentLength", "Reject");
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "MaxRecvDataSegmentLength=16777216"), 0);
        expect_answer(&f, "MaxRecvDataSegmentLength", "Reject");
        cr_assert_eq(f.neg.params.max_send_dsl, 8192);
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "MaxRecvDataSegmentLength=16777215"), 0);
        cr_assert_eq(f.neg.params.max_send_dsl, 16777215);
        fx_fini(&f);
}

Test(params_decl, identities_and_alias)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "InitiatorName=iqn.1993-08.org.debian:01:abc\0"
                              "InitiatorAlias=host one\0TargetName=iqn.2024-01.org.x:disk"),
                     0);
        cr_assert_eq(f.answer.count, 0, "declarations get no answer");
        cr_assert_str_eq(f.neg.params.initiator_name, "iqn.1993-08.org.debian:01:abc");
        cr_assert_str_eq(f.neg.params.initiator_alias, "host one");
        cr_assert_str_eq(f.neg.params.target_name, "iqn.2024-01.org.x:disk");
        fx_fini(&f);
}

Test(params_decl, malformed_names_fail_the_login)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "InitiatorName=not a name"), -1);
        cr_assert_eq(f.fail.status_detail, ISCSI_LOGIN_DETAIL_INIT_ERR);
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "TargetName=bogus"), -1);
        cr_assert_eq(f.fail.status_detail, ISCSI_LOGIN_DETAIL_NOT_FOUND);
        fx_fini(&f);
}

Test(params_decl, session_type)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(f.neg.params.session_type, ISCSI_SESSION_NORMAL, "default Normal");
        cr_assert_eq(SEND(&f, "SessionType=Discovery"), 0);
        cr_assert_eq(f.neg.params.session_type, ISCSI_SESSION_DISCOVERY);
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "SessionType=Boot"), -1);
        cr_assert_eq(f.fail.status_detail, ISCSI_LOGIN_DETAIL_SESSION_TYPE_UNSUPPORTED);
        /* the first request fixed Normal; Discovery later is a change */
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "MaxBurstLength=65536"), 0);
        cr_assert_eq(SEND(&f, "SessionType=Discovery"), -1);
        cr_assert_eq(f.fail.status_detail, ISCSI_LOGIN_DETAIL_INIT_ERR);
        fx_fini(&f);
}

/* ---- Irrelevant ---- */

Test(params_irrelevant, discovery_session_keys)
{
        struct fixture f;
        fx_init(&f, false);
        /* SessionType last: it is still applied first */
        cr_assert_eq(SEND(&f, "MaxBurstLength=65536\0InitialR2T=No\0MaxConnections=2\0"
                              "ErrorRecoveryLevel=0\0HeaderDigest=None\0SessionType=Discovery"),
                     0);
        expect_answer(&f, "MaxBurstLength", "Irrelevant");
        expect_answer(&f, "InitialR2T", "Irrelevant");
        expect_answer(&f, "MaxConnections", "Irrelevant");
        expect_answer(&f, "ErrorRecoveryLevel", "0");
        expect_answer(&f, "HeaderDigest", "None");
        cr_assert_eq(f.neg.params.max_burst_length, 262144, "default kept");
        fx_fini(&f);
}

Test(params_irrelevant, first_burst_with_initial_r2t_and_no_immediate_data)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "FirstBurstLength=4096\0InitialR2T=Yes\0ImmediateData=No"), 0);
        expect_answer(&f, "FirstBurstLength", "Irrelevant");
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "FirstBurstLength=4096\0InitialR2T=Yes\0ImmediateData=Yes"), 0);
        expect_answer(&f, "FirstBurstLength", "4096");
        fx_fini(&f);
}

Test(params_irrelevant, iser_keys_without_rdma_extensions)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "TargetRecvDataSegmentLength=65536\0"
                              "MaxOutstandingUnexpectedPDUs=8"),
                     0);
        expect_answer(&f, "TargetRecvDataSegmentLength", "Irrelevant");
        expect_answer(&f, "MaxOutstandingUnexpectedPDUs", "Irrelevant");
        fx_fini(&f);
}

/* ---- NotUnderstood, target-only keys, obsolete keys ---- */

Test(params_misc, unknown_keys_not_understood)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "X-com.example.Feature=1\0FooBar=Baz"), 0);
        expect_answer(&f, "X-com.example.Feature", "NotUnderstood");
        expect_answer(&f, "FooBar", "NotUnderstood");
        fx_fini(&f);
}

Test(params_misc, target_only_keys_rejected_from_initiator)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "TargetAlias=x\0TargetPortalGroupTag=1\0SendTargets=All"), 0);
        expect_answer(&f, "TargetAlias", "Reject");
        expect_answer(&f, "TargetPortalGroupTag", "Reject");
        expect_answer(&f, "SendTargets", "Reject");
        fx_fini(&f);
}

Test(params_misc, markers_obsolete)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "IFMarker=No\0OFMarker=Yes\0OFMarkInt=2048~8192\0IFMarkInt=1"), 0);
        expect_answer(&f, "IFMarker", "No");
        expect_answer(&f, "OFMarker", "No");
        expect_answer(&f, "OFMarkInt", "Reject");
        expect_answer(&f, "IFMarkInt", "Reject");
        fx_fini(&f);
}

Test(params_misc, security_keys_left_to_caller)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "AuthMethod=CHAP\0CHAP_A=5"), 0);
        cr_assert_eq(f.answer.count, 0);
        cr_assert(iscsi_key_is_security(iscsi_key_lookup("CHAP_R")));
        cr_assert_not(iscsi_key_is_security(iscsi_key_lookup("MaxBurstLength")));
        fx_fini(&f);
}

/* ---- once per login ---- */

Test(params_once, renegotiation_fails_login)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "MaxBurstLength=65536"), 0);
        cr_assert_eq(SEND(&f, "MaxBurstLength=65536"), -1);
        cr_assert_eq(f.fail.status_detail, ISCSI_LOGIN_DETAIL_INIT_ERR);
        fx_fini(&f);
}

Test(params_once, same_declaration_repeated_is_tolerated_changed_is_not)
{
        struct fixture f;
        fx_init(&f, false);
        cr_assert_eq(SEND(&f, "InitiatorName=iqn.2000-01.org.a:1\0SessionType=Normal"), 0);
        cr_assert_eq(SEND(&f, "InitiatorName=iqn.2000-01.org.a:1\0SessionType=Normal"), 0);
        cr_assert_eq(SEND(&f, "InitiatorName=iqn.2000-01.org.a:2"), -1);
        fx_fini(&f);
}

/* ---- target offers ---- */

Test(params_offer, unacceptable_default_is_offered_and_answer_taken)
{
        struct fixture f;
        fx_init(&f, false);
        f.limits.immediate_data = false;
        f.limits.max_burst_length = 65536;
        f.limits.first_burst_length = 16384;
        fx_reinit(&f, false);
        cr_assert_eq(SEND(&f, "HeaderDigest=None"), 0);
        textbuf_reset(&f.rsp);
        iscsi_neg_add_target_keys(&f.neg, &f.rsp);
        struct textkv_list l;
        cr_assert_eq(textkv_parse((const uint8_t *)f.rsp.data, f.rsp.len, &l), TEXTKV_OK);
        cr_assert_str_eq(textkv_find(&l, "ImmediateData"), "No");
        cr_assert_str_eq(textkv_find(&l, "MaxBurstLength"), "65536");
        cr_assert_str_eq(textkv_find(&l, "FirstBurstLength"), "16384");
        textkv_list_free(&l);
        cr_assert(iscsi_neg_offers_pending(&f.neg));
        /* answers to our offers get no reply and settle the values */
        cr_assert_eq(SEND(&f, "ImmediateData=No\0MaxBurstLength=32768\0FirstBurstLength=16384"), 0);
        cr_assert_eq(f.answer.count, 0);
        cr_assert_not(iscsi_neg_offers_pending(&f.neg));
        cr_assert_not(f.neg.params.immediate_data);
        cr_assert_eq(f.neg.params.max_burst_length, 32768);
        cr_assert_eq(f.neg.params.first_burst_length, 16384);
        fx_fini(&f);
}

Test(params_offer, nothing_offered_when_defaults_acceptable)
{
        struct fixture f;
        fx_init(&f, false);
        iscsi_neg_add_target_keys(&f.neg, &f.rsp);
        cr_assert_not(iscsi_neg_offers_pending(&f.neg));
        fx_fini(&f);
}

/* ---- iSER ---- */

Test(params_iser, lengths_digests_and_unexpected_pdus)
{
        struct fixture f;
        fx_init(&f, true);
        cr_assert_eq(SEND(&f, "HeaderDigest=CRC32C,None\0DataDigest=CRC32C\0"
                              "TargetRecvDataSegmentLength=1048576\0"
                              "InitiatorRecvDataSegmentLength=131072\0"
                              "MaxOutstandingUnexpectedPDUs=10\0MaxRecvDataSegmentLength=65536\0"
                              "RDMAExtensions=Yes"),
                     0);
        expect_answer(&f, "RDMAExtensions", "Yes");
        expect_answer(&f, "HeaderDigest", "None");
        expect_answer(&f, "DataDigest", "Reject");
        expect_answer(&f, "TargetRecvDataSegmentLength", "262144");
        expect_answer(&f, "InitiatorRecvDataSegmentLength", "131072");
        expect_answer(&f, "MaxOutstandingUnexpectedPDUs", "10");
        expect_answer(&f, "MaxRecvDataSegmentLength", "Irrelevant");
        cr_assert_eq(f.neg.params.target_recv_dsl, 262144);
        cr_assert_eq(f.neg.params.initiator_recv_dsl, 131072);
        struct iscsi_neg_failure nf;
        cr_assert_eq(iscsi_neg_finish(&f.neg, &nf), 0);
        fx_fini(&f);
}

Test(params_iser, unexpected_pdus_zero_is_unlimited)
{
        struct fixture f;
        fx_init(&f, true);
        f.limits.max_outstanding_unexpected_pdus = 5;
        fx_reinit(&f, true);
        cr_assert_eq(SEND(&f, "RDMAExtensions=Yes\0MaxOutstandingUnexpectedPDUs=0"), 0);
        expect_answer(&f, "MaxOutstandingUnexpectedPDUs", "5");
        fx_reinit(&f, true);
        cr_assert_eq(SEND(&f, "RDMAExtensions=Yes\0MaxOutstandingUnexpectedPDUs=1"), 0);
        expect_answer(&f, "MaxOutstandingUnexpectedPDUs", "Reject");
        fx_fini(&f);
}

Test(params_iser, declares_target_recv_dsl_and_requires_rdma_extensions)
{
        struct fixture f;
        fx_init(&f, true);
        cr_assert_eq(SEND(&f, "RDMAExtensions=Yes"), 0);
        textbuf_reset(&f.rsp);
        iscsi_neg_add_target_keys(&f.neg, &f.rsp);
        struct textkv_list l;
        cr_assert_eq(textkv_parse((const uint8_t *)f.rsp.data, f.rsp.len, &l), TEXTKV_OK);
        cr_assert_str_eq(textkv_find(&l, "TargetRecvDataSegmentLength"), "262144");
        cr_assert_null(textkv_find(&l, "MaxRecvDataSegmentLength"));
        textkv_list_free(&l);
        /* a Normal session on RDMA without RDMAExtensions=Yes cannot run */
        fx_reinit(&f, true);
        struct iscsi_neg_failure nf;
        cr_assert_eq(iscsi_neg_finish(&f.neg, &nf), -1);
        fx_fini(&f);
}

/* ---- full feature phase text ---- */

Test(params_text, only_renegotiable_keys_change)
{
        struct iscsi_params p;
        iscsi_params_defaults(&p);
        static const char req_text[] = "MaxRecvDataSegmentLength=131072\0MaxBurstLength=4096\0"
                                       "X-vendor=1\0SendTargets=All\0InitiatorAlias=renamed";
        struct textkv_list req, out;
        cr_assert_eq(textkv_parse((const uint8_t *)req_text, sizeof(req_text), &req), TEXTKV_OK);
        struct textbuf rsp;
        textbuf_init(&rsp);
        cr_assert_eq(iscsi_text_negotiate(&p, &req, &rsp), 5);
        cr_assert_eq(textkv_parse((const uint8_t *)rsp.data, rsp.len, &out), TEXTKV_OK);
        cr_assert_eq(p.max_send_dsl, 131072);
        cr_assert_eq(p.max_burst_length, 262144);
        cr_assert_str_eq(p.initiator_alias, "renamed");
        cr_assert_str_eq(textkv_find(&out, "MaxBurstLength"), "Reject");
        cr_assert_str_eq(textkv_find(&out, "X-vendor"), "NotUnderstood");
        cr_assert_null(textkv_find(&out, "SendTargets"));
        cr_assert_null(textkv_find(&out, "MaxRecvDataSegmentLength"));
        textkv_list_free(&req);
        textkv_list_free(&out);
        textbuf_free(&rsp);
}

/* ---- value syntax ---- */

Test(params_syntax, numbers_and_booleans)
{
        uint64_t v;
        cr_assert_eq(iscsi_parse_number("0", &v), 0);
        cr_assert_eq(v, 0);
        cr_assert_eq(iscsi_parse_number("262144", &v), 0);
        cr_assert_eq(v, 262144);
        cr_assert_eq(iscsi_parse_number("0X1f", &v), 0);
        cr_assert_eq(v, 31);
        cr_assert_eq(iscsi_parse_number("18446744073709551615", &v), 0);
        cr_assert_eq(iscsi_parse_number("18446744073709551616", &v), -1);
        cr_assert_eq(iscsi_parse_number("", &v), -1);
        cr_assert_eq(iscsi_parse_number("0x", &v), -1);
        cr_assert_eq(iscsi_parse_number("-1", &v), -1);
        cr_assert_eq(iscsi_parse_number("12a", &v), -1);
        cr_assert_eq(iscsi_parse_number(" 1", &v), -1);
        bool b;
        cr_assert_eq(iscsi_parse_bool("Yes", &b), 0);
        cr_assert(b);
        cr_assert_eq(iscsi_parse_bool("No", &b), 0);
        cr_assert_not(b);
        cr_assert_eq(iscsi_parse_bool("YES", &b), -1);
        cr_assert(iscsi_name_valid("iqn.2004-10.com.example:disk1"));
        cr_assert(iscsi_name_valid("eui.02004567A425678D"));
        cr_assert_not(iscsi_name_valid("iqn."));
        cr_assert_not(iscsi_name_valid("host:disk"));
}
