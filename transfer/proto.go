package transfer

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relocate/relocate/ckpt"
)

// The control protocol of a migration.
//
// Source to target (the stdin of `relocate receive`) is a sequence of
// frames: one type byte, a big-endian uint32 length, the payload. The
// image travels in data frames, so the source can still speak after it
// (commit) or instead of its end (abort), and the target never has to
// guess where the image stops.
//
// Target to source (its stdout) is one JSON message per line. Its stderr
// carries what it has to tell a human (hook output, warnings).
const (
	frameHello  = 'H' // JSON hello
	frameData   = 'D' // image bytes
	frameEnd    = 'E' // the image is complete
	frameCommit = 'C' // the decision: resume the restored tree (see commit.go)
	frameAbort  = 'A' // the migration is called off; payload: why
	frameForget = 'F' // the source's copy is gone: the target's record can go
	frameBeat   = 'K' // nothing to say, but alive (every beatEvery, ignored)

	maxFrame = 1 << 20 // image bytes per data frame
	// maxControl caps a non-data frame (a hello with a large survey).
	maxControl = 64 << 20
)

// Messages from the target.
const (
	msgHello   = "hello"   // survey checked: Problems lists what would fail
	msgReady   = "ready"   // the restored tree is frozen, waiting for commit
	msgRunning = "running" // the restored tree runs (after commit)
	msgAborted = "aborted" // the target has no copy (it aborted, or never had one)
	msgDone    = "done"    // committed; the target side exits
	msgBeat    = "beat"    // alive (every beatEvery during a migration)
	msgError   = "error"   // the target failed and cleaned up: Error says why
)

// ProtocolVersion changes when either side's messages change meaning.
const ProtocolVersion = 2

// hello is the source's first frame.
type hello struct {
	Protocol  int          `json:"protocol"`
	Version   string       `json:"version"`
	Source    string       `json:"source"` // the source's host name, for hooks
	Survey    *ckpt.Survey `json:"survey"`
	CheckOnly bool         `json:"check_only,omitempty"`
	TimeNS    bool         `json:"timens"`
	PIDNS     bool         `json:"pidns,omitempty"`
	// Hooks that run on the target: "pre-restore", "post-restore".
	Hooks map[string]string `json:"hooks,omitempty"`
	// ID names the migration in both hosts' state records.
	ID string `json:"id"`
	// CommitMS: the target aborts its frozen copy if no commit comes
	// within this many milliseconds of READY.
	CommitMS int64 `json:"commit_ms,omitempty"`
	// Resolve: not a migration but a question about migration Resolve's
	// copy here, with the source's Decision ("commit" or "abort").
	Resolve  string `json:"resolve,omitempty"`
	Decision string `json:"decision,omitempty"`
	// IdleMS: the target gives up on a source silent this long (it sends
	// heartbeats every beatEvery).
	IdleMS int64 `json:"idle_ms,omitempty"`
	// Fault: a fault to inject on the target (tests; see fault.go).
	Fault string `json:"fault,omitempty"`
}

// message is one line from the target.
type message struct {
	Type     string   `json:"type"`
	Protocol int      `json:"protocol,omitempty"`
	Problems []string `json:"problems,omitempty"`
	// Missing: the paths among Problems that the target does not have.
	Missing []string `json:"missing,omitempty"`
	Error   string   `json:"error,omitempty"`
	PID     int      `json:"pid,omitempty"`
	// Restore figures, with "running".
	Processes  int   `json:"processes,omitempty"`
	Threads    int   `json:"threads,omitempty"`
	BytesRead  int64 `json:"bytes_read,omitempty"`
	RestoreMS  int64 `json:"restore_ms,omitempty"`
	TimeNSUsed bool  `json:"timens,omitempty"`
}

// frameWriter writes frames; Write sends data frames, so the image writer
// can write straight into it. Safe for concurrent use.
type frameWriter struct {
	mu   sync.Mutex
	w    io.Writer
	sent int64 // payload bytes of data frames
	err  error // the first failed write
	// fault: a streamNN fault fires once that share of the memory phase
	// (prog) is sent.
	fault fault
	prog  *ckpt.Progress
	// A send blocked longer than stall calls onStall (which closes the
	// connection, failing the send).
	stall   time.Duration
	onStall func()
}

// streamFault injects a streamNN fault when its share of the image is out.
func (f *frameWriter) streamFault() {
	var pct int
	if _, err := fmt.Sscanf(f.fault.step, "stream%d", &pct); err != nil || f.prog == nil {
		return
	}
	phase, _ := f.prog.Phase.Load().(string)
	total := f.prog.Total.Load()
	if phase != "dumping memory" || total == 0 || f.prog.Done.Load()*100 < total*int64(pct) {
		return
	}
	flt := f.fault
	f.fault = fault{}
	flt.at(flt.step)
}

func (f *frameWriter) send(kind byte, payload []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stall > 0 && f.onStall != nil {
		t := time.AfterFunc(f.stall, f.onStall)
		defer t.Stop()
	}
	var h [5]byte
	h[0] = kind
	binary.BigEndian.PutUint32(h[1:], uint32(len(payload)))
	_, err := f.w.Write(h[:])
	if err == nil {
		_, err = f.w.Write(payload)
	}
	if err != nil && f.err == nil {
		f.err = err
	}
	return err
}

// failed reports whether a write to the target has failed.
func (f *frameWriter) failed() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err != nil
}

func (f *frameWriter) sendJSON(kind byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return f.send(kind, b)
}

func (f *frameWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxFrame)]
		if err := f.send(frameData, chunk); err != nil {
			return n, err
		}
		f.mu.Lock()
		f.sent += int64(len(chunk))
		f.mu.Unlock()
		n += len(chunk)
		f.streamFault()
		p = p[len(chunk):]
	}
	return n, nil
}

// errAborted: the source called the migration off.
type abortedError struct{ reason string }

func (e *abortedError) Error() string { return "the source called the migration off: " + e.reason }

// errStreamCut: the source went away without a word (connection lost).
var errStreamCut = errors.New("the stream from the source ended before the migration finished (connection lost?)")

// frameReader reads frames. As an io.Reader it yields the image: the
// payload of data frames up to the end frame (then io.EOF); an abort or a
// cut stream is an error there.
type frameReader struct {
	r    *bufio.Reader
	left uint32 // unread bytes of the current data frame
	end  bool
}

func newFrameReader(r io.Reader) *frameReader { return &frameReader{r: bufio.NewReaderSize(r, 1<<20)} }

// The source sends a heartbeat frame every beatEvery while nothing else
// goes out, so that the target, reading with a deadline, tells a quiet
// source (a post-dump hook running) from a dead link, which sends nothing
// and never ends on its own (sshd has no keepalive of its own by default).
const beatEvery = 2 * time.Second

// heartbeat sends a heartbeat frame every beatEvery until stop closes.
func (f *frameWriter) heartbeat(stop <-chan struct{}) {
	t := time.NewTicker(beatEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if f.send(frameBeat, nil) != nil {
				return
			}
		}
	}
}

// idleReader fails a read that waits longer than idle for the first byte
// (the link is dead: the source's heartbeats stopped).
type idleReader struct {
	f    *os.File
	idle atomic.Int64 // nanoseconds
}

func (r *idleReader) Read(p []byte) (int, error) {
	if err := r.f.SetReadDeadline(time.Now().Add(time.Duration(r.idle.Load()))); err != nil {
		return r.f.Read(p) // not pollable: no deadline
	}
	n, err := r.f.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = fmt.Errorf("nothing from the source for %s: the link is down", time.Duration(r.idle.Load()))
	}
	return n, err
}

// next reads the header and payload of a non-data frame, or the header of
// a data frame (payload left to Read).
func (f *frameReader) next() (kind byte, payload []byte, err error) {
	var h [5]byte
	if _, err := io.ReadFull(f.r, h[:]); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, nil, errStreamCut
		}
		return 0, nil, err
	}
	kind, n := h[0], binary.BigEndian.Uint32(h[1:])
	switch kind {
	case frameData:
		f.left = n
		return kind, nil, nil
	case frameBeat:
		if n != 0 {
			return 0, nil, fmt.Errorf("protocol: a heartbeat frame of %d bytes", n)
		}
		return f.next()
	case frameHello, frameEnd, frameCommit, frameAbort, frameForget:
	default:
		return 0, nil, fmt.Errorf("protocol: unknown frame type %q from the source", kind)
	}
	if n > maxControl {
		return 0, nil, fmt.Errorf("protocol: a %q frame of %d bytes", kind, n)
	}
	// Grown as bytes arrive: a garbled length costs no more than the
	// bytes actually sent.
	payload, err = io.ReadAll(io.LimitReader(f.r, int64(n)))
	if err != nil || len(payload) != int(n) {
		return 0, nil, errStreamCut
	}
	return kind, payload, nil
}

// Read returns image bytes.
func (f *frameReader) Read(p []byte) (int, error) {
	for f.left == 0 {
		if f.end {
			return 0, io.EOF
		}
		kind, payload, err := f.next()
		if err != nil {
			return 0, err
		}
		switch kind {
		case frameData:
		case frameEnd:
			f.end = true
		case frameAbort:
			return 0, &abortedError{string(payload)}
		default:
			return 0, fmt.Errorf("protocol: a %q frame in the middle of the image", kind)
		}
	}
	n, err := f.r.Read(p[:min(len(p), int(f.left))])
	f.left -= uint32(n)
	if err == io.EOF {
		err = errStreamCut
	}
	return n, err
}

// decision waits for the source's verdict after the image: nil on commit.
func (f *frameReader) decision() error {
	for {
		kind, payload, err := f.next()
		if err != nil {
			return err
		}
		switch kind {
		case frameCommit:
			return nil
		case frameAbort:
			return &abortedError{string(payload)}
		case frameData:
			// Image bytes after the image: skip them.
			if _, err := io.CopyN(io.Discard, f.r, int64(f.left)); err != nil {
				return errStreamCut
			}
			f.left = 0
		}
	}
}

// messageWriter sends JSON lines; safe for concurrent use.
type messageWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (m *messageWriter) send(msg message) error {
	b, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err = m.w.Write(append(b, '\n'))
	return err
}

// readMessages delivers the target's messages on a channel, closed when
// its stdout ends.
func readMessages(r io.Reader) <-chan message {
	ch := make(chan message, 4)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			var m message
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				m = message{Type: msgError, Error: fmt.Sprintf("protocol: the target said %q", truncate(sc.Text(), 200))}
			}
			ch <- m
		}
	}()
	return ch
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
