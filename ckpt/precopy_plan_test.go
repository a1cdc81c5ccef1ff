package ckpt

import (
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/image"
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
		// 512 MB/s: 16 MiB takes 31 ms, within the 75 ms of the 150 ms
		// budget the copy may have.
		{"small hot set", PreCopyOptions{}, []PreCopyRound{r(1024, 2000, 16)}, []string{stopConverged}},
		// 512 MB/s: 200 MiB is 390 ms; then 30 MiB is 59 ms.
		{"shrinks", PreCopyOptions{}, []PreCopyRound{r(1024, 2000, 200), r(200, 400, 30)}, []string{"", stopConverged}},
		// 200 MB/s: 16 MiB is 84 ms, within 150 ms but not within the
		// copy's share of it; throttled, 4 MiB is 21 ms.
		{"freeze has fixed costs", PreCopyOptions{}, []PreCopyRound{r(200, 1000, 16), r(16, 80, 16), r(16, 80, 4)},
			[]string{"", "", stopConverged}},
		{"tight budget", PreCopyOptions{MaxFreeze: 10 * time.Millisecond}, []PreCopyRound{r(1024, 2000, 16), r(16, 40, 2)},
			[]string{"", stopConverged}},
		// Written as fast as copied: 300 MiB, then 290; no throttle allowed.
		{"not shrinking", PreCopyOptions{MaxThrottle: -1}, []PreCopyRound{r(1024, 2000, 300), r(300, 600, 290)}, []string{"", stopNoProgress}},
		{"round limit", PreCopyOptions{MaxRounds: 3}, []PreCopyRound{r(1024, 2000, 800), r(800, 1600, 600), r(600, 1200, 400)},
			[]string{"", "", stopRounds}},
		// A round too short to measure uses the best rate seen.
		{"unmeasured round", PreCopyOptions{}, []PreCopyRound{r(1024, 2000, 200), r(0, 0, 30)}, []string{"", stopConverged}},
		// Throttled a step more each round it does not shrink, up to the
		// limit; then it freezes anyway.
		{"throttled", PreCopyOptions{MaxThrottle: 0.5}, []PreCopyRound{r(1024, 2000, 300), r(300, 600, 290),
			r(290, 580, 280), r(280, 560, 275)}, []string{"", "", "", stopNoProgress}},
		// Throttling helps: it converges.
		{"throttle helps", PreCopyOptions{}, []PreCopyRound{r(1024, 2000, 300), r(300, 600, 295), r(295, 590, 30)},
			[]string{"", "", stopConverged}},
	} {
		p := newRoundPlan(tc.opts)
		for i, round := range tc.rounds {
			stop, why := p.done(round)
			if stop != (tc.want[i] != "") || why != tc.want[i] {
				t.Errorf("%s: round %d: stop=%v %q, want %q", tc.name, i, stop, why, tc.want[i])
			}
		}
	}
	// The throttle steps: 0, then a step more per round without progress,
	// capped at the limit.
	for _, tc := range []struct {
		max  float64
		want []float64
	}{
		{0.6, []float64{0, 0.25, 0.5, 0.6}},
		{0, []float64{0, 0.25, 0.5, 0.75, 0.9, 0.95}},
		{1, []float64{0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.97, 0.99}},
	} {
		p := newRoundPlan(PreCopyOptions{MaxThrottle: tc.max})
		var got []float64
		for _, d := range []int64{300, 295, 290, 289, 288, 287, 286, 285, 284, 283} {
			if stop, _ := p.done(r(300, 600, d)); stop {
				break
			}
			got = append(got, p.throttle)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("max %v: throttle steps %v, want %v", tc.max, got, tc.want)
		}
	}
}

func TestRoundPhase(t *testing.T) {
	if got := roundPhase(0, nil); got != "pre-copy round 1" {
		t.Errorf("first round: %q", got)
	}
	done := []PreCopyRound{{Bytes: 200e6, MS: 1000, DirtyBytes: 16e6}}
	if got, want := roundPhase(1, done), "pre-copy round 2 (written 16 MB/s, copied 200 MB/s)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestRegionsOf(t *testing.T) {
	vmas := []VMA{
		{Start: 0x1000, End: 0x2000},
		{Start: 0x2000, End: 0x3000},
		{Start: 0x3000, End: 0x4000, Flags: []string{"gd"}},
		{Start: 0x5000, End: 0x6000, Flags: []string{"nr", "rd"}},
	}
	want := []image.Region{{Start: 0x1000, End: 0x3000}, {Start: 0x3000, End: 0x4000, Flags: unix.MAP_GROWSDOWN},
		{Start: 0x5000, End: 0x6000, Flags: unix.MAP_NORESERVE}}
	if got := regionsOf(vmas); !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	many := make([]VMA, image.MaxRegions+10)
	for i := range many {
		many[i] = VMA{Start: uint64(2*i) << 12, End: uint64(2*i+1) << 12}
	}
	if got := regionsOf(many); len(got) != image.MaxRegions {
		t.Errorf("%d regions, want at most %d", len(got), image.MaxRegions)
	}
}
