package ckpt

import "time"

// PreCopyOptions ask Dump to copy memory while the process runs before it
// freezes it for the rest (see DumpOptions.PreCopy).
type PreCopyOptions struct {
	// MaxFreeze is the time the frozen pass should take at most: rounds go
	// on until what was written meanwhile can be sent in it. 0: 150 ms.
	MaxFreeze time.Duration
	// MaxRounds caps the rounds while the process runs. 0: 12.
	MaxRounds int
	// Required: fail when this kernel cannot track the writes of the
	// process (no userfaultfd write-protection, no soft-dirty bits);
	// otherwise Dump copies everything frozen, as without PreCopy.
	Required bool
	// MaxThrottle is the largest share of the time the process may be
	// stopped for while it writes faster than the copy goes (0: 0.95, at
	// most 0.99; a negative value: never throttle).
	MaxThrottle float64
}

// PreCopyRound is one round of a pre-copy, for the user.
type PreCopyRound struct {
	Bytes      int64 `json:"bytes"`       // memory copied in the round
	MS         int64 `json:"ms"`          // how long it took
	DirtyBytes int64 `json:"dirty_bytes"` // written meanwhile: the next round's work
	// Throttle is the share of the time the process was stopped for
	// during the round.
	Throttle float64 `json:"throttle,omitempty"`
}

// PreCopyResult says how a pre-copy went.
type PreCopyResult struct {
	Tracking string `json:"tracking"` // "userfaultfd" or "soft-dirty"
	// Processes is how many processes of the tree were pre-copied (those
	// that appeared during the rounds, or could not be tracked, are
	// copied whole by the frozen pass).
	Processes int            `json:"processes"`
	Rounds    []PreCopyRound `json:"rounds"`
	Stop      string         `json:"stop"` // why the rounds ended
	// Throttle is the largest share of the time the process was stopped
	// for during the rounds (0: never) because it wrote faster than the
	// copy went.
	Throttle float64 `json:"throttle"`
	// FinalBytes is what the frozen pass copied of the pre-copied memory
	// (the pages written since the last round).
	FinalBytes int64 `json:"final_bytes"`
}

// roundPlan decides after each round whether to freeze now: when what was
// written meanwhile fits in its share of the freeze budget (copyShare) at
// the rate the rounds copied, when it stops shrinking (the process writes as fast as the
// copy goes) even throttled, or after the last round allowed. A process
// that writes as fast as the copy goes is throttled, a step more each such
// round (like QEMU's auto-converge), up to the limit. Pure: it sees only
// figures.
type roundPlan struct {
	budget      time.Duration
	maxRounds   int
	maxThrottle float64
	throttle    float64 // for the next round
	rounds      []PreCopyRound
}

// copyShare is the part of the freeze budget the frozen pass may spend
// copying pages: the rest goes to what every freeze does whatever the
// memory (reading the process's state, the target's restore of it, the
// commit), measured at 60-80 ms on a small VM.
const copyShare = 0.5

// throttleSteps are the shares of the time a process that keeps writing
// as fast as the copy goes is stopped for, a step more each such round:
// coarse first, then finer near the top, where the last few per cent of
// running time are most of what the process still writes.
var throttleSteps = []float64{0.25, 0.5, 0.75, 0.9, 0.95, 0.97, 0.99}

func newRoundPlan(o PreCopyOptions) *roundPlan {
	p := &roundPlan{budget: o.MaxFreeze, maxRounds: o.MaxRounds}
	if p.budget <= 0 {
		p.budget = 150 * time.Millisecond
	}
	if p.maxRounds <= 0 {
		p.maxRounds = 12
	}
	switch p.maxThrottle = o.MaxThrottle; {
	case p.maxThrottle == 0:
		p.maxThrottle = 0.95
	case p.maxThrottle < 0:
		p.maxThrottle = 0
	}
	p.maxThrottle = min(p.maxThrottle, 0.99)
	return p
}

// Stop reasons.
const (
	stopConverged  = "converged"     // the rest fits the freeze budget
	stopNoProgress = "not shrinking" // written as fast as copied, even throttled to the limit
	stopRounds     = "round limit"
)

// done records a round and says whether to freeze now, and why.
func (p *roundPlan) done(r PreCopyRound) (bool, string) {
	p.rounds = append(p.rounds, r)
	if r.DirtyBytes == 0 {
		return true, stopConverged
	}
	// The copy rate: this round's, or the best seen if this one copied
	// too little to tell.
	var rate float64 // bytes per second
	for _, x := range p.rounds {
		if x.MS > 0 && x.Bytes > 0 {
			rate = max(rate, float64(x.Bytes)/(float64(x.MS)/1000))
		}
	}
	if rate > 0 && float64(r.DirtyBytes)/rate <= p.budget.Seconds()*copyShare {
		return true, stopConverged
	}
	if len(p.rounds) >= p.maxRounds {
		return true, stopRounds
	}
	if n := len(p.rounds); n >= 2 && r.DirtyBytes*10 >= p.rounds[n-2].DirtyBytes*9 {
		if p.throttle >= p.maxThrottle {
			return true, stopNoProgress
		}
		next := p.maxThrottle
		for _, s := range throttleSteps {
			if s > p.throttle {
				next = min(s, next)
				break
			}
		}
		p.throttle = next
	}
	return false, ""
}
