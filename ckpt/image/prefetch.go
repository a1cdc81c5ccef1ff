package image

import (
	"errors"
	"sync"
)

// errStopped: Next after StopPrefetch.
var errStopped = errors.New("image: reading stopped")

// prefetch reads records ahead of the caller of Next on one goroutine and
// decompresses page and blob data on a pool of workers, so that a restore
// writing pages into a process (bound by page faults) does not also wait
// for the decompression of the next record. Records still come out of
// Next in stream order and every check of the stream is made as before,
// in order, on the reading goroutine.
type prefetch struct {
	free  chan *pslot // slots not in flight
	order chan *pslot // to Next, in stream order
	work  chan *pslot // to the workers
	stop  chan struct{}
	once  sync.Once
	cur   *pslot // the slot whose record Next returned last
}

// pslot is one record in flight with the buffers it owns.
type pslot struct {
	rec   Record
	enc   *encoded
	err   error
	buf   []byte // the record's payload (enc.body points into it)
	dec   []byte // decompressed data
	ready chan struct{}
}

// Prefetch makes Next read up to a few records ahead, decompressing on
// workers goroutines (at least 1). Data of a returned record stays valid
// until the next call to Next, as before. Call it once, before the first
// Next that should benefit; StopPrefetch releases the goroutines.
func (r *Reader) Prefetch(workers int) {
	if r.pf != nil || r.err != nil {
		return
	}
	workers = max(workers, 1)
	slots := 2*workers + 2
	pf := &prefetch{
		free:  make(chan *pslot, slots),
		order: make(chan *pslot, slots),
		work:  make(chan *pslot, slots),
		stop:  make(chan struct{}),
	}
	for range slots {
		pf.free <- &pslot{ready: make(chan struct{}, 1)}
	}
	r.pf = pf
	for range workers {
		go pf.worker()
	}
	go pf.read(r)
}

// StopPrefetch ends the goroutines of Prefetch (a reading goroutine
// blocked in the underlying reader ends when that read returns). Next must
// not be called afterwards. Safe to call without Prefetch and more than
// once.
func (r *Reader) StopPrefetch() {
	if r.pf != nil {
		r.pf.once.Do(func() { close(r.pf.stop) })
	}
}

// read is the reading goroutine: it owns the Reader's state from Prefetch
// on, until it has queued an error or the end.
func (pf *prefetch) read(r *Reader) {
	for {
		var s *pslot
		select {
		case s = <-pf.free:
		case <-pf.stop:
			return
		}
		r.buf = s.buf
		s.rec, s.enc, s.err = r.nextRaw()
		s.buf, r.buf = r.buf, nil
		pf.order <- s
		if s.enc != nil {
			pf.work <- s
		} else {
			s.ready <- struct{}{}
		}
		if s.err != nil {
			return
		}
	}
}

func (pf *prefetch) worker() {
	for {
		select {
		case s := <-pf.work:
			data, err := s.enc.decode(&s.dec)
			if err != nil {
				s.err = err
			} else {
				s.rec.setData(data)
			}
			s.ready <- struct{}{}
		case <-pf.stop:
			return
		}
	}
}

// next is Next with Prefetch.
func (pf *prefetch) next() (Record, error) {
	if pf.cur != nil {
		pf.cur.enc = nil
		pf.free <- pf.cur
		pf.cur = nil
	}
	var s *pslot
	select {
	case s = <-pf.order:
	case <-pf.stop:
		return Record{}, errStopped
	}
	select {
	case <-s.ready:
	case <-pf.stop:
		return Record{}, errStopped
	}
	if s.err != nil {
		return Record{}, s.err
	}
	pf.cur = s
	return s.rec, nil
}
