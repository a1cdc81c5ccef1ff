// Package mem moves process memory in bulk: it finds the pages worth saving
// through /proc/PID/pagemap and copies them with batched process_vm_readv and
// process_vm_writev calls (one syscall for up to 1024 runs of pages).
//
// The package imports nothing of ours.
package mem
