package ckpt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/ckpt/proc"
)

// FileMQueue is an open description of a POSIX message queue (mq_open).
// The queue comes back with its name, capacity (mq_maxmsg, mq_msgsize),
// owner, mode and its messages with their priorities, in order; the
// description with its access mode, O_NONBLOCK and offset. Descriptions
// of one queue (the same MQueue.Ino) come back as descriptions of one
// queue, and descriptors of one description (dup, fork) as one
// description, as for every kind.
const FileMQueue = "mqueue"

// MQueue is a POSIX message queue, as one description of it has it.
type MQueue struct {
	// Name is the name mq_open takes ("/jobs"); for a queue unlinked
	// while open, the name it had.
	Name     string `json:"name"`
	Unlinked bool   `json:"unlinked,omitempty"`
	// Ino tells the queues of the image apart: descriptions with the same
	// Ino are of one queue. The first of them in Checkpoint.Files carries
	// the messages; the others carry none.
	Ino     uint64  `json:"ino"`
	MaxMsg  int64   `json:"maxmsg"`
	MsgSize int64   `json:"msgsize"`
	Mode    uint32  `json:"mode"` // permission bits
	UID     uint32  `json:"uid"`
	GID     uint32  `json:"gid"`
	Msgs    []MQMsg `json:"msgs,omitempty"`
}

// MQMsg is one message. A queue's messages are in the order mq_receive
// takes them: highest priority first, the oldest first within one.
type MQMsg struct {
	Prio uint32 `json:"prio"`
	Text []byte `json:"text"`
}

// Kernel limits (include/linux/ipc_namespace.h, include/uapi/linux/mqueue.h,
// include/uapi/linux/limits.h) and the f_type of the mqueue file system
// (include/uapi/linux/magic.h).
const (
	hardMsgMax     = 65536    // HARD_MSGMAX
	hardMsgSizeMax = 16 << 20 // HARD_MSGSIZEMAX
	mqPrioMax      = 32768    // MQ_PRIO_MAX
	nameMax        = 255      // NAME_MAX
	mqueueMagic    = 0x19800202
)

// mqKind names the kind in errors, after the descriptor's link.
const mqKind = "POSIX message queue"

// mqueueKind is a POSIX message queue descriptor.
type mqueueKind struct{ baseKind }

// dump records the queue's name, capacity, owner and mode. Its messages
// are read once the whole tree is known (inTree), once per queue.
func (mqueueKind) dump(p *fdProbe, f *File) (bool, error) {
	var sfs unix.Statfs_t
	if p.fileType() != unix.S_IFREG || unix.Statfs(p.procPath, &sfs) != nil || sfs.Type != mqueueMagic {
		return false, nil
	}
	q := &MQueue{Name: p.link, Ino: p.st.Ino, Mode: p.st.Mode & 0o777, UID: p.st.Uid, GID: p.st.Gid}
	if p.st.Nlink == 0 {
		q.Name, q.Unlinked = strings.TrimSuffix(p.link, " (deleted)"), true
	}
	if err := validMQName(q.Name); err != nil {
		return false, p.fail(mqKind, fmt.Errorf("%v: %w", err, ErrUnsupported))
	}
	dup, err := p.getfd()
	if err != nil {
		return false, p.fail(mqKind, err)
	}
	a, err := mqGetattr(dup)
	unix.Close(dup)
	if err != nil {
		return false, p.fail(mqKind, fmt.Errorf("mq_getsetattr: %w", err))
	}
	// O_NONBLOCK is the description's: f.Flags has it, from fdinfo.
	q.MaxMsg, q.MsgSize = a.MaxMsg, a.MsgSize
	f.Kind, f.MQueue = FileMQueue, q
	return true, nil
}

// inTree reads the queue's messages through the first description of it
// in the file table, once the tree is known: a queue that a process
// outside the tree holds open too is refused (the two could not share it
// after a restore, and the outside one could take or add messages while
// they are read). A process that does not hold it now and opens it by
// name later cannot be seen, nor one holding it only in a descriptor in
// flight (SCM_RIGHTS).
func (mqueueKind) inTree(t *fileTable, opts DumpOptions, p *Process, fd FD, f *File) error {
	q := f.MQueue
	if t.mqRead[q.Ino] {
		return nil
	}
	t.mqRead[q.Ino] = true
	fail := func(err error) error {
		return &FDError{PID: p.PID, FD: fd.FD, What: mqLink(q) + " (" + mqKind + ")", Err: err}
	}
	path := opts.Proc.Path(p.PID, "fd/"+strconv.Itoa(fd.FD))
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fail(err)
	}
	outside, err := t.mqueueOutside(opts.Proc, [2]uint64{st.Dev, st.Ino})
	if err != nil {
		return fail(err)
	}
	if outside != 0 {
		return fail(fmt.Errorf("pid %d outside the checkpoint holds it open too: %w", outside, ErrUnsupported))
	}
	msgs, err := takeMessages(path)
	if err != nil {
		return fail(err)
	}
	for i := range t.files {
		if o := t.files[i].MQueue; t.files[i].Kind == FileMQueue && o.Ino == q.Ino {
			o.Msgs = msgs // the first in the table carries them
			break
		}
	}
	return nil
}

// mqueueOutside returns a process outside the tree (and other than
// relocate) that holds the queue (dev, ino) open, or 0. Every process's
// descriptors are looked at once, for all queues, on first need.
func (t *fileTable) mqueueOutside(fs proc.FS, queue [2]uint64) (int, error) {
	if t.mqOutside == nil {
		pids, err := fs.PIDs()
		if err != nil {
			return 0, fmt.Errorf("list processes: %w", err)
		}
		t.mqOutside = map[[2]uint64]int{}
		self := os.Getpid()
		for _, pid := range pids {
			if t.tree[pid] || pid == self {
				continue
			}
			fds, err := fs.FDs(pid)
			if err != nil {
				continue // gone meanwhile
			}
			for _, n := range fds {
				var st unix.Stat_t
				if unix.Stat(fs.Path(pid, "fd/"+strconv.Itoa(n)), &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
					t.mqOutside[[2]uint64{st.Dev, st.Ino}] = pid
				}
			}
		}
	}
	return t.mqOutside[queue], nil
}

// takeMessages reads the messages of the queue open at path and leaves
// them as they were, returning them in receive order. A POSIX message
// queue cannot be read without taking its messages: they are taken
// through a description of relocate's own (read-write, non-blocking, so
// the process's description and its flags are left alone), then sent
// back at once with their priorities, which queues them in the same
// order. The tree is frozen and no process outside holds the queue, so
// nobody sees it emptied; only relocate dying between the two (SIGKILL)
// would lose them. A queue with a notification registered (mq_notify) is
// refused before anything is taken: sending would fire it.
func takeMessages(path string) ([]MQMsg, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	b := make([]byte, 256)
	n, err := unix.Read(fd, b)
	if err != nil {
		return nil, fmt.Errorf("read its status: %w", err)
	}
	st, err := parseMQStatus(b[:n])
	if err != nil {
		return nil, err
	}
	if st.NotifyPID != 0 {
		return nil, fmt.Errorf("pid %d has a notification registered on it (mq_notify): %w", st.NotifyPID, ErrUnsupported)
	}
	if st.QSize > maxMQueueBytes {
		return nil, fmt.Errorf("holds %d bytes of messages (at most %d): %w", st.QSize, maxMQueueBytes, ErrUnsupported)
	}
	a, err := mqGetattr(fd)
	if err != nil {
		return nil, fmt.Errorf("mq_getsetattr: %w", err)
	}
	if a.MaxMsg < 1 || a.MaxMsg > hardMsgMax || a.MsgSize < 1 || a.MsgSize > hardMsgSizeMax {
		return nil, fmt.Errorf("mq_getsetattr says %d messages of %d bytes", a.MaxMsg, a.MsgSize)
	}
	buf := make([]byte, a.MsgSize)
	var msgs []MQMsg
	var taking error
	for range a.MaxMsg + 1 {
		n, prio, err := mqReceive(fd, buf)
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil {
			taking = fmt.Errorf("mq_timedreceive: %w", err)
			break
		}
		msgs = append(msgs, MQMsg{Prio: prio, Text: bytes.Clone(buf[:n])})
	}
	// Back in, whatever happened above.
	for i, m := range msgs {
		if err := mqSend(fd, m.Text, m.Prio); err != nil {
			return nil, fmt.Errorf("put message %d of %d back (mq_timedsend): %w; the queue lost %d messages", i+1, len(msgs), err, len(msgs)-i)
		}
	}
	if taking != nil {
		return nil, taking
	}
	return msgs, nil
}

// mqStatus is what reading a queue's file says (ipc/mqueue.c,
// mqueue_read_file): "QSIZE:%-10lu NOTIFY:%-5d SIGNO:%-5d NOTIFY_PID:%-6d".
type mqStatus struct {
	QSize     uint64 // bytes in the queued messages
	NotifyPID int    // the process that registered a notification, 0: none
}

// parseMQStatus parses a queue's status line.
func parseMQStatus(b []byte) (mqStatus, error) {
	var st mqStatus
	seen := 0
	for _, field := range strings.Fields(string(b)) {
		k, v, ok := strings.Cut(field, ":")
		if !ok {
			return st, fmt.Errorf("queue status %q: field %q", b, field)
		}
		var err error
		switch k {
		case "QSIZE":
			st.QSize, err = strconv.ParseUint(v, 10, 64)
			seen |= 1
		case "NOTIFY_PID":
			st.NotifyPID, err = strconv.Atoi(v)
			if st.NotifyPID < 0 {
				err = errors.New("negative")
			}
			seen |= 2
		}
		if err != nil {
			return st, fmt.Errorf("queue status %q: %s: %v", b, k, err)
		}
	}
	if seen != 3 {
		return st, fmt.Errorf("queue status %q: no QSIZE or NOTIFY_PID", b)
	}
	return st, nil
}

// validMQName checks a queue's name: a slash, then one path component
// that mq_open can make (at most NAME_MAX bytes, not "." or "..", no
// slash or NUL), in UTF-8 (the image is JSON).
func validMQName(name string) error {
	rest, ok := strings.CutPrefix(name, "/")
	switch {
	case !ok:
		return fmt.Errorf("queue name %q does not start with a slash", name)
	case rest == "" || rest == "." || rest == "..":
		return fmt.Errorf("queue name %q", name)
	case len(rest) > nameMax:
		return fmt.Errorf("queue name of %d bytes (at most %d)", len(rest), nameMax)
	case strings.ContainsAny(rest, "/\x00"):
		return fmt.Errorf("queue name %q has more than one component", name)
	case !utf8.ValidString(rest):
		return fmt.Errorf("queue name %q is not UTF-8", name)
	}
	return nil
}

// validate bounds what restore makes a queue with: the kernel's limits,
// and messages that fit the capacity, in receive order.
func (q *MQueue) validate() error {
	if err := validMQName(q.Name); err != nil {
		return err
	}
	if q.MaxMsg < 1 || q.MaxMsg > hardMsgMax || q.MsgSize < 1 || q.MsgSize > hardMsgSizeMax {
		return fmt.Errorf("queue %s: %d messages of %d bytes (at most %d of %d)", q.Name, q.MaxMsg, q.MsgSize, hardMsgMax, hardMsgSizeMax)
	}
	if q.Mode&^0o777 != 0 {
		return fmt.Errorf("queue %s: mode %#o", q.Name, q.Mode)
	}
	if int64(len(q.Msgs)) > q.MaxMsg {
		return fmt.Errorf("queue %s: %d messages, room for %d", q.Name, len(q.Msgs), q.MaxMsg)
	}
	total := 0
	for i, m := range q.Msgs {
		total += len(m.Text)
		switch {
		case int64(len(m.Text)) > q.MsgSize:
			return fmt.Errorf("queue %s: message %d of %d bytes (at most %d)", q.Name, i, len(m.Text), q.MsgSize)
		case m.Prio >= mqPrioMax:
			return fmt.Errorf("queue %s: message %d has priority %d (at most %d)", q.Name, i, m.Prio, mqPrioMax-1)
		case i > 0 && m.Prio > q.Msgs[i-1].Prio:
			return fmt.Errorf("queue %s: message %d (priority %d) after one of priority %d: not in receive order", q.Name, i, m.Prio, q.Msgs[i-1].Prio)
		case total > maxMQueueBytes:
			return fmt.Errorf("queue %s: more than %d bytes of messages", q.Name, maxMQueueBytes)
		}
	}
	return nil
}

// mqLink is what /proc/PID/fd shows for a descriptor of q.
func mqLink(q *MQueue) string {
	if q.Unlinked {
		return q.Name + " (deleted)"
	}
	return q.Name
}

func (mqueueKind) describe(f *File) string {
	q := f.MQueue
	if q == nil {
		return f.Kind
	}
	s := mqKind + " " + mqLink(q)
	switch len(q.Msgs) {
	case 0: // none, or carried by another description
		return fmt.Sprintf("%s (room for %d messages of %d bytes)", s, q.MaxMsg, q.MsgSize)
	case 1:
		return fmt.Sprintf("%s (1 message queued, room for %d of %d bytes)", s, q.MaxMsg, q.MsgSize)
	}
	return fmt.Sprintf("%s (%d messages queued, room for %d of %d bytes)", s, len(q.Msgs), q.MaxMsg, q.MsgSize)
}

// removeMQueues unlinks the tree's named queues once the tree is gone:
// they moved into the image with it, as its System V queues do
// (removeMsgQueues), and a restore on this host finds the name free. A
// queue replaced meanwhile (another inode) is left alone.
func (t *fileTable) removeMQueues() error {
	var errs []error
	done := map[uint64]bool{}
	for _, f := range t.files {
		q := f.MQueue
		if f.Kind != FileMQueue || q == nil || q.Unlinked || done[q.Ino] {
			continue
		}
		done[q.Ino] = true
		name := q.Name[1:]
		fd, err := mqOpen(name, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0, nil)
		if err != nil {
			continue // gone already
		}
		var st unix.Stat_t
		same := unix.Fstat(fd, &st) == nil && st.Ino == q.Ino
		unix.Close(fd)
		if !same {
			continue
		}
		if err := mqUnlink(name); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("remove POSIX message queue %s: %w", q.Name, err))
		}
	}
	return errors.Join(errs...)
}

// restoredMQueue is a queue this restore made.
type restoredMQueue struct {
	fd   int    // relocate's read-write description of it (in toClose)
	name string // to unlink if the restore is given up; "" once unlinked
}

// open makes the queue on its first description, then opens each
// description of it anew with its access mode, O_NONBLOCK and offset.
func (mqueueKind) open(sh *shared, f *File) (int, error) {
	q := f.MQueue
	if q == nil {
		return -1, fmt.Errorf("message queue without state: %w", image.ErrCorrupt)
	}
	if err := q.validate(); err != nil {
		return -1, fmt.Errorf("image: %v: %w", err, image.ErrCorrupt)
	}
	mq, ok := sh.mqueues[q.Ino]
	if !ok {
		var err error
		if mq, err = sh.makeMQueue(q); err != nil {
			return -1, err
		}
	}
	return reopenAt(mq.fd, openFlags(f), f.Pos)
}

// makeMQueue creates the queue q with its name, capacity, owner and mode,
// and sends its messages in order with their priorities. An unlinked
// queue is made under its old name, or a temporary one if that is taken,
// and unlinked at once.
//
// A named queue whose name is taken here is refused, as a System V queue
// whose key is taken is (createIPC): named queues outlive their
// processes, and the one here is another program's, or this very queue
// left behind by a dump --leave-running and used since; relocate neither
// merges messages into it nor replaces it. A dump that killed the tree
// unlinked its queues (removeMQueues), so restoring on the same host
// after it finds the name free.
func (sh *shared) makeMQueue(q *MQueue) (*restoredMQueue, error) {
	attr := mqAttr{MaxMsg: q.MaxMsg, MsgSize: q.MsgSize}
	create := func(name string) (int, error) {
		const flags = unix.O_RDWR | unix.O_CREAT | unix.O_EXCL | unix.O_NONBLOCK | unix.O_CLOEXEC
		fd, err := mqOpen(name, flags, q.Mode, &attr)
		if errors.Is(err, unix.EMFILE) && raiseMsgQueueLimit() == nil {
			fd, err = mqOpen(name, flags, q.Mode, &attr)
		}
		return fd, err
	}
	name := q.Name[1:]
	fd, err := create(name)
	if q.Unlinked && errors.Is(err, unix.EEXIST) {
		name = fmt.Sprintf(".%s.relocate-%d-%d", name[:min(len(name), 200)], os.Getpid(), len(sh.mqueues))
		fd, err = create(name)
	}
	if errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("its name is taken on this machine (remove that queue first: rm /dev/mqueue%s, with the mqueue file system mounted there): %w",
			q.Name, ErrUnsupported)
	}
	switch {
	case errors.Is(err, unix.EMFILE):
		return nil, fmt.Errorf("mq_open %s: %w (RLIMIT_MSGQUEUE: the queues relocate makes count against its user)", q.Name, err)
	case errors.Is(err, unix.EINVAL):
		return nil, fmt.Errorf("mq_open %s with room for %d messages of %d bytes: %w (without CAP_SYS_RESOURCE, /proc/sys/fs/mqueue/msg_max and msgsize_max are the limits)",
			q.Name, q.MaxMsg, q.MsgSize, err)
	case err != nil:
		return nil, fmt.Errorf("mq_open %s: %w", q.Name, err)
	}
	mq := &restoredMQueue{fd: fd, name: name}
	sh.toClose = append(sh.toClose, fd)
	if sh.mqueues == nil {
		sh.mqueues = map[uint64]*restoredMQueue{}
	}
	sh.mqueues[q.Ino] = mq // unlinked if the restore fails
	if q.Unlinked {
		if err := mqUnlink(name); err != nil {
			return nil, fmt.Errorf("mq_unlink /%s: %w", name, err)
		}
		mq.name = ""
	}
	// The mode again: mq_open applied relocate's umask.
	if err := unix.Fchmod(fd, q.Mode); err != nil {
		return nil, fmt.Errorf("mode %#o: %w", q.Mode, err)
	}
	if err := unix.Fchown(fd, int(q.UID), int(q.GID)); err != nil {
		return nil, fmt.Errorf("owner %d:%d: %w", q.UID, q.GID, err)
	}
	for i, m := range q.Msgs {
		if err := mqSend(fd, m.Text, m.Prio); err != nil {
			return nil, fmt.Errorf("message %d (mq_timedsend): %w", i, err)
		}
	}
	return mq, nil
}

// raiseMsgQueueLimit lifts relocate's RLIMIT_MSGQUEUE, every queue it
// makes being counted against relocate's user and not the queue's owner:
// to no limit with CAP_SYS_RESOURCE, else to the hard limit.
func raiseMsgQueueLimit() error {
	inf := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if unix.Prlimit(0, unix.RLIMIT_MSGQUEUE, &inf, nil) == nil {
		return nil
	}
	var l unix.Rlimit
	if err := unix.Prlimit(0, unix.RLIMIT_MSGQUEUE, nil, &l); err != nil || l.Cur == l.Max {
		return errors.New("RLIMIT_MSGQUEUE at its hard limit")
	}
	l.Cur = l.Max
	return unix.Prlimit(0, unix.RLIMIT_MSGQUEUE, &l, nil)
}

// unlinkMQueues removes the named queues this restore made, when it is
// given up.
func (sh *shared) unlinkMQueues() {
	for _, mq := range sh.mqueues {
		if mq.name != "" {
			_ = mqUnlink(mq.name)
			mq.name = ""
		}
	}
}
