//go:build cgo

package models

/*
#include <stdlib.h> // defines __GLIBC__ with glibc
#if defined(__GLIBC__)
#include <malloc.h>
static void takt_malloc_trim(void) { malloc_trim(0); }
static void takt_mmap_threshold(int bytes) { mallopt(M_MMAP_THRESHOLD, bytes); }
#else
static void takt_malloc_trim(void) {}
static void takt_mmap_threshold(int bytes) {}
#endif
*/
import "C"

// mmapThreshold is the C allocation size from which glibc maps pages of their own, given
// back to the system at free.
const mmapThreshold = 1 << 20

// fixMmapThreshold stops glibc from raising its mmap threshold. By default the first large
// block freed (a session's weights, ONNX Runtime's arena chunks) raises the threshold up to
// 32 MiB, so the next sessions' buffers come from glibc's arenas, which keep the pages
// after a session is destroyed: RSS grew with every model swap, for good. With the
// threshold fixed at 1 MiB those buffers are mapped and unmapped with their session.
// (mallopt with M_MMAP_THRESHOLD disables the dynamic adjustment; a no-op outside glibc.)
func fixMmapThreshold() { C.takt_mmap_threshold(mmapThreshold) }

// TrimHeap hands the C heap's free pages back to the system (glibc's malloc_trim(0); a
// no-op with another C library): what smaller blocks a closed session leaves free in the
// arenas. It takes milliseconds (it walks every arena): call it off any latency-sensitive
// path.
func TrimHeap() { C.takt_malloc_trim() }
