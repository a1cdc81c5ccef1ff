package ckpt

import "testing"

func TestSurveyGone(t *testing.T) {
	s := &Survey{Files: []FileID{{Path: "/usr/bin/app"}}, Paths: []string{"/srv/data", "/srv/state.tmp"}}
	for _, c := range []struct {
		missing []string
		want    bool
	}{
		{nil, true},
		{[]string{"/srv/old.tmp"}, true},
		{[]string{"/srv/old.tmp", "/srv/other.tmp"}, true},
		{[]string{"/srv/state.tmp"}, false},
		{[]string{"/srv/old.tmp", "/srv/data"}, false},
		{[]string{"/usr/bin/app"}, false},
	} {
		if got := s.Gone(c.missing); got != c.want {
			t.Errorf("Gone(%q) = %v, want %v", c.missing, got, c.want)
		}
	}
}
