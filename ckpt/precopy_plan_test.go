package ckpt

import (
	"testing"
	"time"
)

func TestRoundPlan(t *testing.T) {
	const mib = 1 << 20
	r := func(bytes, ms, dirty int64) PreCopyRound {
		return PreCopyRound{Bytes: bytes * mib, MS: ms, DirtyBytes: dirty * mib}
	}
	for _, tc := range []struct {
		name   string
		opts   PreCopyOptions
		rounds []PreCopyRound
		want   []string // "" = go on
	}{
		{"nothing written", PreCopyOptions{}, []PreCopyRound{r(1024, 2000, 0)}, []string{stopConverged}},
		// 512 MB/s: 16 MiB takes 31 ms, within 150 ms.
		{"small hot set", PreCopyOptions{}, []PreCopyRound{r(1024, 2000, 16)}, []string{stopConverged}},
		// 512 MB/s: 200 MiB is 390 ms; then 40 MiB is 78 ms.
		{"shrinks", PreCopyOptions{}, []PreCopyRound{r(1024, 2000, 200), r(200, 400, 40)}, []string{"", stopConverged}},
		{"tight budget", PreCopyOptions{MaxFreeze: 10 * time.Millisecond}, []PreCopyRound{r(1024, 2000, 16), r(16, 40, 2)},
			[]string{"", stopConverged}},
		// Written as fast as copied: 300 MiB, then 290.
		{"not shrinking", PreCopyOptions{}, []PreCopyRound{r(1024, 2000, 300), r(300, 600, 290)}, []string{"", stopNoProgress}},
		{"round limit", PreCopyOptions{MaxRounds: 3}, []PreCopyRound{r(1024, 2000, 800), r(800, 1600, 600), r(600, 1200, 400)},
			[]string{"", "", stopRounds}},
		// A round too short to measure uses the best rate seen.
		{"unmeasured round", PreCopyOptions{}, []PreCopyRound{r(1024, 2000, 200), r(0, 0, 30)}, []string{"", stopConverged}},
	} {
		p := newRoundPlan(tc.opts)
		for i, round := range tc.rounds {
			stop, why := p.done(round)
			if stop != (tc.want[i] != "") || why != tc.want[i] {
				t.Errorf("%s: round %d: stop=%v %q, want %q", tc.name, i, stop, why, tc.want[i])
			}
		}
	}
}
