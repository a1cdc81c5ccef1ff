package ckpt

import (
	"encoding/json"

	"github.com/relocate/relocate/ckpt/ptrace"
	"github.com/relocate/relocate/sock"
)

// Checkpoint is the metadata record of an image: everything but memory
// pages and blob contents, which follow it in the stream.
type Checkpoint struct {
	Root      int       `json:"root"`
	NetLocks  []string  `json:"net_locks,omitempty"` // nftables tables holding the connections until restore
	Processes []Process `json:"processes"`
	Files     []File    `json:"files"`
	Clock     *Clock    `json:"clock,omitempty"`
	// Host is the boot ID and name of the machine dumped on: a restore
	// there checks files by device and inode.
	Host string `json:"host,omitempty"`
}

// Clock is what the tree's clocks read when it was frozen, in
// nanoseconds, so that a restore into a new time namespace can continue
// them instead of jumping to the target's uptime.
type Clock struct {
	Monotonic int64 `json:"monotonic_ns"`
	Boottime  int64 `json:"boottime_ns"`
}

// Process is one process of the tree.
type Process struct {
	PID int `json:"pid"`
	// Zombie: exited, not yet reaped by its parent; WaitStatus is what the
	// parent's wait will report. A zombie has nothing else.
	Zombie     bool     `json:"zombie,omitempty"`
	WaitStatus int      `json:"wait_status,omitempty"`
	PPID       int      `json:"ppid"`
	PGID       int      `json:"pgid"`
	SID        int      `json:"sid"`
	Comm       string   `json:"comm"`
	Exe        string   `json:"exe"`
	ExeFile    *FileID  `json:"exe_file,omitempty"`
	Cmdline    []string `json:"cmdline"`
	Cwd        string   `json:"cwd"`
	// CwdID identifies the working directory (device and inode: a restore
	// on the same host may hand back the very directory the process held
	// even where its credentials could not open the path any more).
	CwdID       *FileID  `json:"cwd_id,omitempty"`
	Root        string   `json:"root"`
	Umask       uint32   `json:"umask"`
	Creds       Creds    `json:"creds"`
	Personality uint64   `json:"personality"`
	OOMScoreAdj int      `json:"oom_score_adj"`
	Rlimits     []Rlimit `json:"rlimits"`
	MM          MM       `json:"mm"`
	VMAs        []VMA    `json:"vmas"`
	// VDSO identifies the vDSO the process was dumped with (nil in older
	// images, or when it had none).
	VDSO          *VDSOInfo    `json:"vdso,omitempty"`
	Threads       []Thread     `json:"threads"`
	FDs           []FD         `json:"fds"`
	SigActions    []SigAction  `json:"sigactions,omitempty"`
	ITimers       [3]ITimer    `json:"itimers"`
	Timers        []PosixTimer `json:"posix_timers,omitempty"`
	SharedPending []SigInfo    `json:"shared_pending,omitempty"`
	// Stopped is the job-control signal that had stopped the process
	// (SIGSTOP, SIGTSTP, ...); 0 if it was running. Restore stops it again.
	Stopped int `json:"stopped,omitempty"`
	// Flags are prctl attributes (parent-death signal, child subreaper,
	// dumpable); nil in images from before they were kept.
	Flags *TaskFlags `json:"prctl,omitempty"`
	// Cgroup is its cgroup v2 membership (nil: none known).
	Cgroup *Cgroup `json:"cgroup,omitempty"`
	// CTTY is 1 + the pty index of the controlling terminal (0: none,
	// or not a pty); TPGID its foreground process group.
	CTTY  int `json:"ctty,omitempty"`
	TPGID int `json:"tpgid,omitempty"`
}

// Creds are the process credentials (real, effective, saved, fs).
type Creds struct {
	UID        [4]int `json:"uid"`
	GID        [4]int `json:"gid"`
	Groups     []int  `json:"groups"`
	CapInh     uint64 `json:"cap_inh"`
	CapPrm     uint64 `json:"cap_prm"`
	CapEff     uint64 `json:"cap_eff"`
	CapBnd     uint64 `json:"cap_bnd"`
	CapAmb     uint64 `json:"cap_amb"`
	NoNewPrivs bool   `json:"no_new_privs"`
	Securebits int    `json:"securebits,omitempty"` // PR_GET_SECUREBITS
}

// Rlimit is one resource limit.
type Rlimit struct {
	Resource int    `json:"resource"`
	Cur      uint64 `json:"cur"`
	Max      uint64 `json:"max"`
}

// MM holds the mm_struct fields PR_SET_MM_MAP restores.
type MM struct {
	StartCode  uint64   `json:"start_code"`
	EndCode    uint64   `json:"end_code"`
	StartData  uint64   `json:"start_data"`
	EndData    uint64   `json:"end_data"`
	StartBrk   uint64   `json:"start_brk"`
	Brk        uint64   `json:"brk"`
	StartStack uint64   `json:"start_stack"`
	ArgStart   uint64   `json:"arg_start"`
	ArgEnd     uint64   `json:"arg_end"`
	EnvStart   uint64   `json:"env_start"`
	EnvEnd     uint64   `json:"env_end"`
	Auxv       []uint64 `json:"auxv"`
}

// VMA kinds.
const (
	VMAAnon     = "anon"     // private anonymous (heap, stacks, ...): pages dumped
	VMAFile     = "file"     // private file mapping: COW'd pages dumped
	VMAShared   = "shared"   // shared file mapping: nothing dumped, the file holds it
	VMAShmem    = "shmem"    // shared anonymous / deleted shared file: pages dumped
	VMADeleted  = "deleted"  // private mapping of a deleted file: all pages dumped
	VMAVDSO     = "vdso"     // [vdso], [vvar], [vvar_vclock]: moved, not dumped
	VMAVsyscall = "vsyscall" // fixed by the kernel
)

// VMA is one memory mapping.
type VMA struct {
	Start  uint64   `json:"start"`
	End    uint64   `json:"end"`
	Prot   int      `json:"prot"`
	Shared bool     `json:"shared,omitempty"`
	Kind   string   `json:"kind"`
	Name   string   `json:"name,omitempty"` // path, or [heap], [stack], [vdso], ...
	Offset uint64   `json:"offset,omitempty"`
	File   *FileID  `json:"file,omitempty"`
	Flags  []string `json:"vmflags,omitempty"`
	Pages  uint64   `json:"pages"` // pages stored in the image for this VMA
	// Obj, for shared memory (MAP_SHARED anonymous, a deleted or memfd
	// file), is 1 + the index of the FileShmem in Checkpoint.Files that
	// holds its contents: every mapping of one object, in any process of
	// the tree, maps that one object again.
	Obj int `json:"obj,omitempty"`
	// SysV, for an attach of a System V shared memory segment (VMASysV),
	// is 1 + the index of its FileSysVShm in Checkpoint.Files.
	SysV int `json:"sysv,omitempty"`
	// PreCopied: pages of this mapping copied by a pre-copy, before the
	// metadata in the stream, still hold (the image then has only those
	// written since). Pages copied before the metadata for any other
	// mapping are dropped.
	PreCopied bool `json:"precopied,omitempty"`
}

// FileID identifies a file on disk so restore can tell it is the same one.
type FileID struct {
	Path  string `json:"path"`
	Dev   uint64 `json:"dev"`
	Ino   uint64 `json:"ino"`
	Size  int64  `json:"size"`
	Mtime int64  `json:"mtime_ns"`
	// BuildID is the ELF build ID, when the file has one: a copy with
	// another mtime (scp without -p, a container layer) is still the same
	// program if size and build ID match.
	BuildID string `json:"build_id,omitempty"`
}

// Same reports whether two FileIDs describe the same contents, as far as
// can be told without reading them whole.
func (f *FileID) Same(o *FileID) bool {
	return f.Size == o.Size && (f.Mtime == o.Mtime || (f.BuildID != "" && f.BuildID == o.BuildID))
}

// Thread is one thread's state.
type Thread struct {
	TID  int    `json:"tid"`
	Comm string `json:"comm"`
	// RegSets are the thread's registers as the architecture's regsets
	// (see regsets.go); a format 1 image has LegacyRegs and LegacyXState
	// instead, which reading converts.
	RegSets       []RegSet          `json:"regsets"`
	LegacyRegs    json.RawMessage   `json:"regs,omitempty"`
	LegacyXState  []byte            `json:"xstate,omitempty"`
	SigMask       uint64            `json:"sigmask"`
	Pending       []SigInfo         `json:"pending,omitempty"`
	AltStack      AltStack          `json:"altstack"`
	ClearChildTID uint64            `json:"clear_child_tid"`
	RobustHead    uint64            `json:"robust_head"`
	RobustLen     uint64            `json:"robust_len"`
	Rseq          ptrace.RseqConfig `json:"rseq"`
	Sched         *ThreadSched      `json:"sched,omitempty"`
	Seccomp       []SeccompFilter   `json:"seccomp,omitempty"` // oldest first
}

// RegSet is one register set of a thread as PTRACE_GETREGSET returns it:
// Note is its NT_* type, Data the kernel's bytes, laid out for the image's
// architecture (image.Header.Arch). A restore takes only the sets its
// architecture knows, with sizes in their bounds (checkRegSets).
type RegSet struct {
	Note uint32 `json:"note"`
	Data []byte `json:"data"`
}

// SigInfo is a raw siginfo_t.
type SigInfo [ptrace.SigInfoSize]byte

// AltStack mirrors stack_t.
type AltStack struct {
	SP    uint64 `json:"sp"`
	Flags int32  `json:"flags"`
	Size  uint64 `json:"size"`
}

// SigAction mirrors struct kernel_sigaction for one signal.
type SigAction struct {
	Sig      int    `json:"sig"`
	Handler  uint64 `json:"handler"`
	Flags    uint64 `json:"flags"`
	Restorer uint64 `json:"restorer"`
	Mask     uint64 `json:"mask"`
}

// ITimer mirrors struct itimerval in microseconds.
type ITimer struct {
	IntervalUS int64 `json:"interval_us"`
	ValueUS    int64 `json:"value_us"`
}

// PosixTimer is one timer_create timer.
type PosixTimer struct {
	ID         int    `json:"id"`
	ClockID    int    `json:"clock_id"`
	Signal     int    `json:"signal"`
	SigevValue uint64 `json:"sigev_value"`
	Notify     string `json:"notify"` // "signal", "thread", "none"
	NotifyTID  int    `json:"notify_tid,omitempty"`
	IntervalNS int64  `json:"interval_ns"`
	ValueNS    int64  `json:"value_ns"`
	Overrun    int    `json:"overrun,omitempty"`
}

// FD is one descriptor of a process, pointing at a File (shared when
// several descriptors, or processes, refer to the same open file).
type FD struct {
	FD      int  `json:"fd"`
	File    int  `json:"file"` // index in Checkpoint.Files
	Cloexec bool `json:"cloexec,omitempty"`
}

// File kinds.
const (
	FileRegular  = "file"    // a path on disk, reopened
	FileDeleted  = "deleted" // contents carried in the image (a blob)
	FileDir      = "dir"
	FileDevice   = "device" // /dev/null, /dev/zero, ...
	FilePipe     = "pipe"   // one end of a pipe; Pipe names the pipe
	FileFIFO     = "fifo"   // a named pipe, reopened by path
	FileEventfd  = "eventfd"
	FileEpoll    = "epoll"
	FileTimerfd  = "timerfd"
	FileSignalfd = "signalfd"
	FileInotify  = "inotify"
	FileTTY      = "tty" // a terminal (--shell-job): attached to the restorer's terminal
	FileSocket   = "socket"
	FileTCP      = "tcp" // an established or half-closed connection (TCP_REPAIR)
	// FileMemfd is a memfd: contents carried as a blob, name and seals
	// kept (Path is "/memfd:NAME").
	FileMemfd = "memfd"
	// FileUnixPair is one end of a connected pair of unix sockets whose
	// other end is in the tree too (Unix.Peer names it).
	FileUnixPair = "unixpair"
	// FileShmem is a shared memory object that mappings refer to (VMA.Obj);
	// its contents are a blob of Size bytes.
	FileShmem = "shmem"
)

// File is one open file description.
type File struct {
	Kind  string  `json:"kind"`
	Path  string  `json:"path,omitempty"`
	Flags int     `json:"flags"` // O_* status and access flags
	Pos   int64   `json:"pos,omitempty"`
	ID    *FileID `json:"id,omitempty"`
	Mode  uint32  `json:"mode,omitempty"`
	Pipe  uint64  `json:"pipe,omitempty"`  // pipe inode: ends with the same Pipe are one pipe
	Blob  uint32  `json:"blob,omitempty"`  // blob id with contents (deleted files, pipe buffers)
	Size  int64   `json:"size,omitempty"`  // bytes in the blob
	Seals int     `json:"seals,omitempty"` // a memfd's F_GET_SEALS
	// PipeSize is a pipe's or FIFO's capacity (F_GETPIPE_SZ), which the
	// program may have changed with F_SETPIPE_SZ.
	PipeSize int `json:"pipe_size,omitempty"`
	// Obj: a deleted file or memfd that is also mapped shared; the
	// descriptor is reopened on that shared memory object (1 + index of
	// its FileShmem), so that the two stay one.
	Obj int `json:"obj,omitempty"`

	Eventfd *EventfdState  `json:"eventfd,omitempty"`
	Timerfd *TimerfdState  `json:"timerfd,omitempty"`
	SigMask uint64         `json:"sigmask,omitempty"` // signalfd
	Epoll   []EpollWatch   `json:"epoll,omitempty"`
	Inotify []InotifyWatch `json:"inotify,omitempty"`
	Socket  *sock.State    `json:"socket,omitempty"`
	TCP     *sock.TCPConn  `json:"tcp,omitempty"`
	Unix    *sock.UnixConn `json:"unix,omitempty"`
	// External: a descriptor that led outside the tree (FileExternal).
	External *External `json:"external,omitempty"`
	// SysV: a System V shared memory segment (FileSysVShm).
	SysV *SysVShm `json:"sysv,omitempty"`
	// SysVMsg: a System V message queue (FileSysVMsg).
	SysVMsg *SysVMsgQueue `json:"sysv_msg,omitempty"`
	// SysVSem: a System V semaphore set (FileSysVSem).
	SysVSem *SysVSemSet `json:"sysv_sem,omitempty"`
	// MQueue: a POSIX message queue (FileMQueue).
	MQueue *MQueue `json:"mqueue,omitempty"`
	// PTY: a pseudo-terminal end (FilePTMX holds its state; FilePTS
	// only its index).
	PTY *PTY `json:"pty,omitempty"`
}

// EventfdState is an eventfd's counter and mode.
type EventfdState struct {
	Count     uint64 `json:"count"`
	Semaphore bool   `json:"semaphore,omitempty"`
}

// TimerfdState is a timerfd's clock and remaining time (relative).
type TimerfdState struct {
	ClockID    int    `json:"clock_id"`
	ValueNS    int64  `json:"value_ns"`
	IntervalNS int64  `json:"interval_ns"`
	Ticks      uint64 `json:"ticks,omitempty"` // expirations not yet read
}

// EpollWatch is one descriptor an epoll file watches, by its number in the
// process.
type EpollWatch struct {
	FD     int    `json:"fd"`
	Events uint32 `json:"events"`
	Data   uint64 `json:"data"`
	Ino    uint64 `json:"ino"` // inode of the watched file, to check FD still names it
}

// PIDs lists the processes of the tree, root first.
func (cp *Checkpoint) PIDs() []int {
	out := make([]int, 0, len(cp.Processes))
	for _, p := range cp.Processes {
		out = append(out, p.PID)
	}
	return out
}

// Addresses lists the local "ip:port" of the tree's TCP connections and
// inet sockets, each once: what a migration's hooks move between hosts.
func (cp *Checkpoint) Addresses() []string {
	var out []string
	seen := map[string]bool{}
	for i := range cp.Files {
		f := &cp.Files[i]
		for _, a := range kindOf(f).addresses(f) {
			if a != "" && !seen[a] {
				seen[a] = true
				out = append(out, a)
			}
		}
	}
	return out
}
