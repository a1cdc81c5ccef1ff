// Package image is relocate's checkpoint stream: written once front to back
// and read once front to back, so that it can flow through a pipe, stdout or
// an SSH channel with no seeks and no temporary files. It makes no syscalls
// and imports nothing of ours. FORMAT.md is the normative description.
//
//	stream   = preamble record* trailer
//	preamble = "RELOCATE" | major u16 | minor u16 | 4 zero bytes
//	record   = kind u8 | flags u8 (0) | reserved u16 (0) | length u32 | payload | crc32c u32
//	           (all integers little-endian; the CRC covers kind..payload)
//
//	kind 1 header   JSON Header; always the first record
//	kind 2 meta     opaque JSON for the engine (at most 64 MiB)
//	kind 3 pages    pid u32 | flags u32 (bit 0: LZ4) | addr u64 | npages u32 | rawlen u32 | data
//	kind 4 blob     id u32 | flags u32 | offset u64 | rawlen u32 | data (at most 4 MiB)
//	kind 5 trailer  records u64 | pages u64 | zero pages u64 | raw bytes u64 | stream crc32c u32
//
// Zero pages are never stored; a page record holds a run of non-zero pages,
// LZ4-compressed when that is smaller. A page may appear again later in the
// stream and the later copy wins (room for iterative pre-copy). The trailer
// counts the records and carries a CRC32C of every byte before it; a stream
// without a valid trailer, or with bytes after it, is refused. Lengths are
// checked against per-kind caps before anything is allocated.
//
// The Writer compresses on a pool of worker goroutines and writes records in
// submission order; Abort unblocks every caller at once.
package image
