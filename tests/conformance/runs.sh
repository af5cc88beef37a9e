# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the caller
# The LU configurations isergw is measured in, for tests/integration/test_conformance.sh and
# tests/conformance/compare.sh (sourced by both, so that CI and docs/conformance.md run the
# same). expected-pass.txt and skipped.txt are judged against the two runs combined
# (cu_results.py): a test passes if it passed in either, and fails if it failed in either.
#
# main: every test, on a 1 GiB LU with 512-byte blocks (thin, as lib.sh's config defaults).
CU_MAIN_TESTS=ALL
CU_MAIN_LUN_SIZE=1G
CU_MAIN_LUN_EXTRA=""

# pbs4k: a LU with 512-byte logical and 4096-byte physical blocks (READ CAPACITY(16) LBPPBE 3)
# and a removable medium (removable = yes: INQUIRY RMB 1), for the tests that skip on the main
# LU for want of either. About 5 s.
#
# The physical block size: five tests need it (they skip with "LBPPB < 2" on the main LU):
# CompareAndWrite.InvalidDataOutSize and WriteSame10/16.UnmapUnaligned and
# .InvalidDataOutSize. The rest of these suites check that LBPPBE and the Block Limits
# granularities agree with everything else. GetLBAStatus.UnmapSingle is left out: with
# LBPPB > 1 libiscsi 1.19 expects GET LBA STATUS at LBA i+1 to return a first descriptor
# starting at i+LBPPB, where SBC-3 requires the first descriptor to start at the LBA asked
# for (it passes in the main run).
#
# The removable medium: StartStopUnit.Simple and all of PreventAllow skip on a LU that is not
# removable; StartStopUnit.PwrCnd and .NoLoej and NoMedia.NoMediaSBC pass there without
# checking anything, and check here that LOEJ 0 or a power condition leaves the medium in,
# and that the commands that need the medium fail NOT READY, MEDIUM NOT PRESENT while it is
# ejected. NoMedia.NoMediaSBC stops early (iscsi-test-cu -d tries ORWRITE, which isergw does
# not implement, and skips the rest) and leaves the medium ejected, so it must run last:
# iscsi-test-cu 1.19 runs the -t list from its last entry to its first, which is why NoMedia
# comes first here. A suite run after it would fail on every command, not pass by mistake.
# PreventAllow.2ITNexuses runs as a suite of its own, with sessions opened for it: in the
# PreventAllow suite its second session has been open since the suite started, and its first
# command gets the unit attention of the LU and target resets of the tests before it
# (SAM-5: a reset is reported to every I_T nexus), which the test does not expect.
CU_PBS4K_TESTS="ALL.NoMedia,ALL.CompareAndWrite,ALL.WriteSame10,ALL.WriteSame16,ALL.Unmap"
CU_PBS4K_TESTS+=",ALL.Inquiry,ALL.ReadCapacity16,ALL.GetLBAStatus.Simple"
CU_PBS4K_TESTS+=",ALL.GetLBAStatus.BeyondEol,ALL.StartStopUnit,ALL.PreventAllow.2ITNexuses"
CU_PBS4K_TESTS+=",ALL.PreventAllow.[!2]*"
CU_PBS4K_LUN_SIZE=1G
CU_PBS4K_LUN_EXTRA="physical_block_size = 4096
removable = yes"
