package ckpt

import (
	"errors"
	"testing"
)

func TestParseExternalRule(t *testing.T) {
	for _, c := range []struct {
		in   string
		want ExternalRule
		bad  bool
	}{
		{in: "1=/dev/null", want: ExternalRule{FD: 1, Target: "/dev/null"}},
		{in: "42:2=stderr", want: ExternalRule{PID: 42, FD: 2, Target: "stderr"}},
		{in: "all=/var/log/app.log", want: ExternalRule{FD: -1, Target: "/var/log/app.log"}},
		{in: "1=a=b", want: ExternalRule{FD: 1, Target: "a=b"}},
		{in: "1", bad: true},
		{in: "1=", bad: true},
		{in: "x=/dev/null", bad: true},
		{in: "-1=/dev/null", bad: true},
		{in: "0:1=stdout", bad: true},
		{in: ":1=stdout", bad: true},
	} {
		got, err := ParseExternalRule(c.in)
		if c.bad != (err != nil) || (!c.bad && got != c.want) {
			t.Errorf("ParseExternalRule(%q) = %+v, %v", c.in, got, err)
		}
	}
}

func TestResolveExternals(t *testing.T) {
	cp := &Checkpoint{
		Processes: []Process{
			{PID: 10, FDs: []FD{{FD: 1, File: 0}, {FD: 2, File: 0}, {FD: 3, File: 1}}},
			{PID: 11, FDs: []FD{{FD: 1, File: 2}}},
		},
		Files: []File{
			{Kind: FileExternal, Flags: 1, External: &External{What: "pipe:[1]"}},
			{Kind: FileRegular, Path: "/etc/hostname"},
			{Kind: FileExternal, Flags: 1, External: &External{What: "pipe:[2]"}},
		},
	}
	targets := func(rules ...ExternalRule) (map[string]string, error) {
		sh := &shared{cp: cp}
		defer sh.closeFiles()
		if err := sh.resolveExternals(rules); err != nil {
			return nil, err
		}
		out := map[string]string{}
		for _, n := range sh.notes {
			out[n.What+"@"+string(rune('0'+n.FD))] = n.Target
		}
		return out, nil
	}
	got, err := targets()
	if err != nil || got["pipe:[1]@1"] != "/dev/null" || got["pipe:[2]@1"] != "/dev/null" || len(got) != 3 {
		t.Errorf("no rules: %v, %v", got, err)
	}
	// The most particular rule wins: pid:fd over fd over all.
	got, err = targets(ExternalRule{FD: -1, Target: "stderr"}, ExternalRule{PID: 11, FD: 1, Target: "stdout"})
	if err != nil || got["pipe:[1]@2"] != "stderr" || got["pipe:[2]@1"] != "stdout" {
		t.Errorf("precedence: %v, %v", got, err)
	}
	// fd 1 and 2 of pid 10 are one description: two targets for it are refused.
	if _, err := targets(ExternalRule{FD: 1, Target: "stdout"}, ExternalRule{FD: 2, Target: "stderr"}); !errors.Is(err, ErrExternal) {
		t.Errorf("conflict: %v, want ErrExternal", err)
	}
	if _, err := targets(ExternalRule{FD: 3, Target: "stdout"}); !errors.Is(err, ErrExternal) {
		t.Errorf("fd 3 is not external: %v, want ErrExternal", err)
	}
}
