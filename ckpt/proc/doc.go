// Package proc reads and parses the files of /proc/PID that a checkpoint
// needs: maps and smaps, stat, status, fdinfo, timers, auxv and limits.
//
// Opening a file is separate from parsing it. FS reads files below an
// injectable root ("/proc" by default) and lists tasks, children and
// descriptors; the Parse functions are pure functions from the bytes of one
// file to a struct. They make no system calls, never panic, and report
// malformed input as a *ParseError naming the file, the line and the reason.
// The formats are those of Linux 6.18 on x86_64 (fs/proc/array.c,
// fs/proc/base.c, fs/proc/task_mmu.c and the show_fdinfo methods of
// eventfd, eventpoll, inotify, fanotify, timerfd and signalfd).
//
// A listing or a file read from a running process is a snapshot that may be
// stale by the time it is used; callers freeze the process first.
//
// proc imports nothing of ours: only the standard library.
package proc
