package ckpt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"github.com/relocate/relocate/ckpt/image"
)

// An image is untrusted input: every count and size in it is bounded here
// before anything is allocated or looped over by it.
const (
	// metaHeapBudget bounds the memory the decoded metadata record may
	// take. JSON is compact where Go is not: "{}," is three bytes and a
	// Process is 640, so a record of a few megabytes of empty objects
	// decodes to gigabytes. The budget is checked by walking the JSON
	// against the Go types before json.Unmarshal runs. A real tree of
	// thousands of processes with thousands of mappings each stays far
	// below it (65536 bare processes would take 120 MiB).
	metaHeapBudget = 256 << 20
	// metaMaxDepth bounds the nesting of the record (ours is under 10).
	metaMaxDepth = 64

	maxProcesses = 1 << 16 // processes in one image
	maxThreads   = 1 << 16 // threads in one image
	maxFDs       = 1 << 20 // descriptors in one image (per process: RLIMIT_NOFILE's hard cap)
	// maxInotifyWD bounds an inotify watch number: restore uses up every
	// number below it with a throw-away watch, one syscall each.
	maxInotifyWD = 1 << 20
	// maxPipeBuffer bounds a pipe's or FIFO's buffered bytes, which
	// restore holds in memory and sizes the pipe for (F_SETPIPE_SZ).
	maxPipeBuffer = 1 << 26
	// maxMQueueBytes bounds the bytes in the messages of one POSIX
	// message queue, which the metadata carries and restore holds in
	// memory (RLIMIT_MSGQUEUE keeps a user's queues to 800 KiB by
	// default). The count and size of the messages are bounded by the
	// kernel's own limits (MQueue.validate).
	maxMQueueBytes = 1 << 24
	maxTimers      = 1 << 16 // POSIX timers of one process
	maxPending     = 1 << 16 // queued signals of one process (RLIMIT_SIGPENDING's usual order)
)

// decodeMeta decodes the metadata record into cp after checking that the
// decoded form fits metaHeapBudget.
func decodeMeta(b []byte, cp *Checkpoint) error {
	est := heapEstimate{left: metaHeapBudget, fields: map[reflect.Type]map[string]reflect.Type{}}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := est.value(dec, reflect.TypeOf(cp).Elem(), 0); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the top-level object")
	}
	return json.Unmarshal(b, cp)
}

// heapEstimate walks JSON tokens alongside the Go type they decode into
// and charges what json.Unmarshal would allocate for them: each slice
// element three times (while append grows a slice, the old and the new
// backing array are both live), each pointer's target, each string's
// bytes. Values for fields the type does not have are skipped by
// json.Unmarshal without allocating, but are still charged a little so
// that no input is free.
type heapEstimate struct {
	left   int64
	fields map[reflect.Type]map[string]reflect.Type
}

const skippedValueCost = 16

func (e *heapEstimate) charge(n int64) error {
	e.left -= n
	if e.left < 0 {
		return fmt.Errorf("it would take more than %d MiB of memory to decode", metaHeapBudget>>20)
	}
	return nil
}

// value consumes one JSON value decoding into t (nil: skipped).
func (e *heapEstimate) value(dec *json.Decoder, t reflect.Type, depth int) error {
	if depth > metaMaxDepth {
		return fmt.Errorf("nested more than %d deep", metaMaxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	for t != nil && t.Kind() == reflect.Pointer {
		if err := e.charge(int64(t.Elem().Size())); err != nil {
			return err
		}
		t = t.Elem()
	}
	if t == nil {
		if err := e.charge(skippedValueCost); err != nil {
			return err
		}
	}
	switch tok := tok.(type) {
	case string:
		if t != nil {
			return e.charge(int64(len(tok)))
		}
		return nil
	case json.Delim:
		switch tok {
		case '[':
			return e.array(dec, t, depth)
		case '{':
			return e.object(dec, t, depth)
		}
		return fmt.Errorf("unexpected %v", tok)
	}
	return nil // numbers, booleans, null: no allocation of their own
}

func (e *heapEstimate) array(dec *json.Decoder, t reflect.Type, depth int) error {
	var elem reflect.Type
	var cost int64
	if t != nil {
		switch t.Kind() {
		case reflect.Slice:
			elem, cost = t.Elem(), 3*int64(t.Elem().Size())
		case reflect.Array:
			elem = t.Elem() // inline in the parent
		case reflect.Interface:
			cost = 16
		}
	}
	for dec.More() {
		if err := e.charge(max(cost, 1)); err != nil {
			return err
		}
		if err := e.value(dec, elem, depth+1); err != nil {
			return err
		}
	}
	_, err := dec.Token() // ']'
	return err
}

func (e *heapEstimate) object(dec *json.Decoder, t reflect.Type, depth int) error {
	var fields map[string]reflect.Type
	var mapElem reflect.Type
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			fields = e.structFields(t)
		case reflect.Map:
			mapElem = t.Elem()
		}
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := key.(string)
		var ft reflect.Type
		switch {
		case fields != nil:
			ft = fields[strings.ToLower(k)]
		case mapElem != nil:
			ft = mapElem
			if err := e.charge(int64(len(k)) + int64(mapElem.Size()) + 48); err != nil {
				return err
			}
		}
		if err := e.value(dec, ft, depth+1); err != nil {
			return err
		}
	}
	_, err := dec.Token() // '}'
	return err
}

// structFields maps the JSON names of t's fields (lowercased, as
// json.Unmarshal matches them without regard to case) to their types,
// embedded structs' fields included.
func (e *heapEstimate) structFields(t reflect.Type) map[string]reflect.Type {
	if m, ok := e.fields[t]; ok {
		return m
	}
	m := map[string]reflect.Type{}
	e.fields[t] = m
	var add func(t reflect.Type)
	add = func(t reflect.Type) {
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				ft := f.Type
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if ft.Kind() == reflect.Struct {
					add(ft)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			m[strings.ToLower(name)] = f.Type
		}
	}
	add(t)
	return m
}

// validateCounts bounds what restore loops over or sizes by.
func (cp *Checkpoint) validateCounts() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("image metadata: %s: %w", fmt.Sprintf(format, a...), image.ErrCorrupt)
	}
	if len(cp.Processes) > maxProcesses {
		return bad("%d processes (at most %d)", len(cp.Processes), maxProcesses)
	}
	threads, fds := 0, 0
	for i := range cp.Processes {
		p := &cp.Processes[i]
		threads += len(p.Threads)
		fds += len(p.FDs)
		if err := p.validateCreds(); err != nil {
			return err
		}
		// Each of these is an injected syscall at restore.
		pending := len(p.SharedPending)
		for _, t := range p.Threads {
			pending += len(t.Pending)
		}
		if len(p.SigActions) > 64 || len(p.Rlimits) > 64 || len(p.Timers) > maxTimers || pending > maxPending {
			return bad("pid %d: %d signal actions, %d limits, %d timers, %d pending signals", p.PID, len(p.SigActions), len(p.Rlimits), len(p.Timers), pending)
		}
	}
	if threads > maxThreads {
		return bad("%d threads (at most %d)", threads, maxThreads)
	}
	if fds > maxFDs || len(cp.Files) > maxFDs {
		return bad("%d descriptors of %d files (at most %d)", fds, len(cp.Files), maxFDs)
	}
	mqSeen := map[uint64]bool{}
	for i, f := range cp.Files {
		if f.Size < 0 || f.Pos < 0 {
			return bad("file %d (%s) has size %d, offset %d", i, f.Path, f.Size, f.Pos)
		}
		if (f.Kind == FilePipe || f.Kind == FileFIFO) && f.Size > maxPipeBuffer {
			return bad("%s %q buffers %d bytes (at most %d)", f.Kind, f.Path, f.Size, maxPipeBuffer)
		}
		if len(f.Epoll) > maxFDs {
			return bad("epoll file %d watches %d descriptors", i, len(f.Epoll))
		}
		if f.Kind == FileMQueue {
			q := f.MQueue
			if q == nil {
				return bad("file %d: message queue without state", i)
			}
			if err := q.validate(); err != nil {
				return bad("file %d: %v", i, err)
			}
			// The first description of a queue carries its messages.
			if mqSeen[q.Ino] && len(q.Msgs) > 0 {
				return bad("file %d: messages of queue %s carried twice", i, q.Name)
			}
			mqSeen[q.Ino] = true
		}
		prev := 0
		for _, w := range f.Inotify {
			if w.WD <= prev || w.WD > maxInotifyWD {
				return bad("inotify watch number %d on %q (1 to %d, increasing)", w.WD, w.Path, maxInotifyWD)
			}
			prev = w.WD
		}
	}
	return nil
}

// validNetLocks checks that every nftables table the image names is one of
// relocate's own lock tables for a process of the image: restore lifts
// (deletes) them, and a crafted image must not name the firewall's.
func (cp *Checkpoint) validNetLocks() error {
	for _, name := range cp.NetLocks {
		ok := false
		for _, p := range cp.Processes {
			if name == lockName(p.PID) {
				ok = true
				break
			}
		}
		if !ok {
			return fmt.Errorf("image metadata: nftables table %q is not a relocate lock of a process of the image: %w", name, image.ErrCorrupt)
		}
	}
	return nil
}
