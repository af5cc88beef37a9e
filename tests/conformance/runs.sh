# shellcheck shell=bash disable=SC2034  # sourced: the variables are used by the caller
# The LU configurations isergw is measured in, for tests/integration/test_conformance.sh and
# scripts/conformance-compare.sh (sourced by both, so that CI and docs/conformance.md run the
# same). expected-pass.txt and skipped.txt are judged against the two runs combined
# (cu_results.py): a test passes if it passed in either.
#
# main: every test, on a 1 GiB LU with 512-byte blocks (thin, as lib.sh's config defaults).
CU_MAIN_TESTS=ALL
CU_MAIN_LUN_SIZE=1G
CU_MAIN_LUN_EXTRA=""

# pbs4k: the suites that depend on the physical block size, on a LU with 512-byte logical and
# 4096-byte physical blocks (READ CAPACITY(16) LBPPBE 3). Five tests need that (they skip
# with "LBPPB < 2" on the main LU): CompareAndWrite.InvalidDataOutSize and
# WriteSame10/16.UnmapUnaligned and .InvalidDataOutSize. The rest of these suites check
# that LBPPBE and the Block Limits granularities agree with everything else. About 5 s.
#
# GetLBAStatus.UnmapSingle is left out: with LBPPB > 1 libiscsi 1.19 expects GET LBA
# STATUS at LBA i+1 to return a first descriptor starting at i+LBPPB, where SBC-3 requires
# the first descriptor to start at the LBA asked for (it passes in the main run).
CU_PBS4K_TESTS="ALL.CompareAndWrite,ALL.WriteSame10,ALL.WriteSame16,ALL.Unmap,ALL.Inquiry"
CU_PBS4K_TESTS+=",ALL.ReadCapacity16,ALL.GetLBAStatus.Simple,ALL.GetLBAStatus.BeyondEol"
CU_PBS4K_LUN_SIZE=1G
CU_PBS4K_LUN_EXTRA="physical_block_size = 4096"
