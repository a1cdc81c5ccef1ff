// Package image is relocate's checkpoint stream: written once front to back
// and read once front to back, so that it can flow through a pipe, stdout or
// an SSH channel with no seeks and no temporary files. It owns the framing,
// checksums, page compression, versioning and the trailer; the engine's
// metadata is opaque JSON to it. It makes no syscalls and imports nothing
// of ours. FORMAT.md in this directory is the normative description.
//
//	stream   = preamble header-record record* trailer-record EOF
//
//	preamble (16 bytes)
//	+--------------------+-----------+-----------+----------------+
//	| magic "RELOCATE"   | major u16 | minor u16 | reserved 4 x 0 |
//	+--------------------+-----------+-----------+----------------+
//
//	record
//	+---------+----------+--------------+------------+---------------+------------+
//	| kind u8 | flags u8 | reserved u16 | length u32 | payload       | crc32c u32 |
//	|         | (0)      | (0)          |            | length bytes  | of kind..payload
//	+---------+----------+--------------+------------+---------------+------------+
//
//	kind 1 header   JSON Header (at most 1 MiB); always the first record
//	kind 2 meta     opaque JSON for the engine (at most 64 MiB)
//	kind 3 pages    pid u32 | flags u32 | addr u64 | npages u32 | rawlen u32 | data
//	                (npages 1..1024, rawlen = npages*4096, flags bit 0: data is LZ4)
//	kind 4 blob     id u32 | flags u32 | offset u64 | rawlen u32 | data
//	                (rawlen at most 4 MiB, flags bit 0: data is LZ4)
//	kind 5 trailer  records u64 | pages u64 | zero pages u64 | raw bytes u64 |
//	                stream crc32c u32 (of every byte before the trailer record)
//
// All integers are little-endian; checksums are CRC-32C (Castagnoli).
//
// Zero pages are never stored: a page record holds a run of non-zero pages,
// as one LZ4 block when that is smaller, raw otherwise. A page may appear
// again later in the stream and the later copy wins (room for iterative
// pre-copy). A stream without its trailer, with a trailer that does not
// match what came before it, or with bytes after it is refused. Every length
// is checked against its kind's cap before memory is allocated for it.
//
// The Writer compresses on a pool of worker goroutines and writes records in
// the order they were submitted, with a bounded number of chunks in flight.
// The Reader returns io.EOF only once the whole stream has been verified;
// nothing read from it may be acted on irreversibly before that.
package image
