package ckpt

import (
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt/mem"
)

func rg(a, b uint64) mem.Range { return mem.Range{Start: a << 12, End: b << 12} }

func TestPlanPieces(t *testing.T) {
	gd := uint64(unix.MAP_GROWSDOWN)
	for _, tc := range []struct {
		name   string
		r      mem.Range
		placed []placedRange
		own    []mem.Range
		hint   []mem.Range
		flags  []uint64
		want   []piece
	}{
		{name: "fresh, no hint", r: rg(10, 20),
			want: []piece{{placedRange{rg(10, 20), 0}, pieceMap}}},
		{name: "all placed", r: rg(10, 20), placed: []placedRange{{rg(0, 30), 0}},
			want: []piece{{placedRange{rg(10, 20), 0}, pieceWrite}}},
		{name: "partly placed", r: rg(10, 20), placed: []placedRange{{rg(15, 30), 0}},
			want: []piece{{placedRange{rg(10, 15), 0}, pieceMap}, {placedRange{rg(15, 20), 0}, pieceWrite}}},
		{name: "a hole between placed", r: rg(10, 20), placed: []placedRange{{rg(10, 12), 0}, {rg(14, 20), 0}},
			want: []piece{{placedRange{rg(10, 12), 0}, pieceWrite}, {placedRange{rg(12, 14), 0}, pieceMap}, {placedRange{rg(14, 20), 0}, pieceWrite}}},
		{name: "the stub's own page in the middle", r: rg(10, 20), own: []mem.Range{rg(12, 13)},
			want: []piece{{placedRange{rg(10, 12), 0}, pieceMap}, {placedRange{rg(12, 13), 0}, pieceHold}, {placedRange{rg(13, 20), 0}, pieceMap}}},
		{name: "flags of the hint region", r: rg(10, 20), hint: []mem.Range{rg(0, 15), rg(15, 40)}, flags: []uint64{0, gd},
			want: []piece{{placedRange{rg(10, 15), 0}, pieceMap}, {placedRange{rg(15, 20), gd}, pieceMap}}},
		{name: "hint boundaries alone do not split", r: rg(10, 20), hint: []mem.Range{rg(0, 15), rg(15, 40)}, flags: []uint64{0, 0},
			want: []piece{{placedRange{rg(10, 20), 0}, pieceMap}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := planPieces(tc.r, tc.placed, tc.own, tc.hint, tc.flags)
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestInsertPlaced(t *testing.T) {
	gd := uint64(unix.MAP_GROWSDOWN)
	var p []placedRange
	for _, r := range []placedRange{{rg(20, 30), 0}, {rg(0, 10), 0}, {rg(10, 20), 0}, {rg(40, 50), gd}, {rg(30, 40), 0}} {
		p = insertPlaced(p, r)
	}
	want := []placedRange{{rg(0, 40), 0}, {rg(40, 50), gd}}
	if !slices.Equal(p, want) {
		t.Errorf("got %v, want %v", p, want)
	}
}

func TestSortPlaced(t *testing.T) {
	gd := uint64(unix.MAP_GROWSDOWN)
	placed := []placedRange{{rg(0, 100), 0}, {rg(200, 210), gd}}
	vmas := []VMA{
		{Start: 0, End: 10 << 12, Kind: VMAAnon, PreCopied: true},                                 // keep
		{Start: 10 << 12, End: 20 << 12, Kind: VMAAnon},                                           // copied whole again: drop
		{Start: 30 << 12, End: 150 << 12, Kind: VMAAnon, PreCopied: true},                         // keep 30-100
		{Start: 190 << 12, End: 210 << 12, Kind: VMAAnon, PreCopied: true},                        // no gd now: salvage
		{Start: 300 << 12, End: 310 << 12, Kind: VMAAnon, PreCopied: true, Flags: []string{"gd"}}, // nothing placed
	}
	keep, salvage := sortPlaced(placed, vmas)
	if want := []mem.Range{rg(0, 10), rg(30, 100)}; !slices.Equal(keep, want) {
		t.Errorf("keep %v, want %v", keep, want)
	}
	if want := []mem.Range{rg(200, 210)}; !slices.Equal(salvage, want) {
		t.Errorf("salvage %v, want %v", salvage, want)
	}
}

func TestSubtractRanges(t *testing.T) {
	for _, tc := range []struct {
		r     mem.Range
		minus []mem.Range
		want  []mem.Range
	}{
		{rg(0, 10), nil, []mem.Range{rg(0, 10)}},
		{rg(0, 10), []mem.Range{rg(0, 10)}, nil},
		{rg(0, 10), []mem.Range{rg(2, 4), rg(6, 8)}, []mem.Range{rg(0, 2), rg(4, 6), rg(8, 10)}},
		{rg(0, 10), []mem.Range{rg(8, 20), rg(20, 30)}, []mem.Range{rg(0, 8)}},
		{rg(5, 10), []mem.Range{rg(0, 5), rg(10, 12)}, []mem.Range{rg(5, 10)}},
	} {
		if got := subtractRanges(tc.r, tc.minus); !slices.Equal(got, tc.want) {
			t.Errorf("%v - %v: got %v, want %v", tc.r, tc.minus, got, tc.want)
		}
	}
}

func TestMergeRanges(t *testing.T) {
	got := mergeRanges([]mem.Range{rg(10, 20), rg(0, 5), rg(5, 8), rg(15, 30), rg(40, 41)})
	if want := []mem.Range{rg(0, 8), rg(10, 30), rg(40, 41)}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
