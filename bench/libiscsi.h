/* libiscsi's headers. The project root is on the include path (CMakeLists.txt) and has its own
 * iscsi/iscsi.h, which shadows libiscsi's <iscsi/iscsi.h>; name the installed headers by path
 * when they are where Debian puts them. */
#ifndef ISERGW_BENCH_LIBISCSI_H
#define ISERGW_BENCH_LIBISCSI_H

#if __has_include("/usr/include/iscsi/iscsi.h")
#include "/usr/include/iscsi/iscsi.h"
#include "/usr/include/iscsi/scsi-lowlevel.h"
#else
#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#endif

#endif
