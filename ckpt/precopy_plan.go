package ckpt

import "time"

// PreCopyOptions ask Dump to copy memory while the process runs before it
// freezes it for the rest (see DumpOptions.PreCopy).
type PreCopyOptions struct {
	// MaxFreeze is the time the frozen pass should take at most: rounds go
	// on until what was written meanwhile can be sent in it. 0: 150 ms.
	MaxFreeze time.Duration
	// MaxRounds caps the rounds while the process runs. 0: 8.
	MaxRounds int
	// Required: fail when this kernel cannot track the writes of the
	// process (no userfaultfd write-protection, no soft-dirty bits);
	// otherwise Dump copies everything frozen, as without PreCopy.
	Required bool
}

// PreCopyRound is one round of a pre-copy, for the user.
type PreCopyRound struct {
	Bytes      int64 `json:"bytes"`       // memory copied in the round
	MS         int64 `json:"ms"`          // how long it took
	DirtyBytes int64 `json:"dirty_bytes"` // written meanwhile: the next round's work
}

// PreCopyResult says how a pre-copy went.
type PreCopyResult struct {
	Tracking string         `json:"tracking"` // "userfaultfd" or "soft-dirty"
	Rounds   []PreCopyRound `json:"rounds"`
	Stop     string         `json:"stop"` // why the rounds ended
	// FinalBytes is what the frozen pass copied of the pre-copied memory
	// (the pages written since the last round).
	FinalBytes int64 `json:"final_bytes"`
}

// roundPlan decides after each round whether to freeze now: when what was
// written meanwhile fits in the freeze budget at the rate the last round
// copied, when it stops shrinking (the process writes as fast as the
// copy goes), or after the last round allowed. Pure: it sees only figures.
type roundPlan struct {
	budget    time.Duration
	maxRounds int
	rounds    []PreCopyRound
}

func newRoundPlan(o PreCopyOptions) *roundPlan {
	p := &roundPlan{budget: o.MaxFreeze, maxRounds: o.MaxRounds}
	if p.budget <= 0 {
		p.budget = 150 * time.Millisecond
	}
	if p.maxRounds <= 0 {
		p.maxRounds = 8
	}
	return p
}

// Stop reasons.
const (
	stopConverged  = "converged"     // the rest fits the freeze budget
	stopNoProgress = "not shrinking" // written as fast as copied
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
	if rate > 0 && float64(r.DirtyBytes)/rate <= p.budget.Seconds() {
		return true, stopConverged
	}
	if len(p.rounds) >= p.maxRounds {
		return true, stopRounds
	}
	if n := len(p.rounds); n >= 2 && r.DirtyBytes*10 >= p.rounds[n-2].DirtyBytes*9 {
		return true, stopNoProgress
	}
	return false, ""
}
