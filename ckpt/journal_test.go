package ckpt

import "testing"

func TestParseJournalState(t *testing.T) {
	for _, tc := range []struct {
		name, state string
		want        JournalStream
	}{
		{"journald's file", "# This is private data. Do not parse\nPRIORITY=3\nLEVEL_PREFIX=1\nFORWARD_TO_SYSLOG=0\nFORWARD_TO_KMSG=1\nFORWARD_TO_CONSOLE=0\nSTREAM_ID=ab12\nIDENTIFIER=nginx\nUNIT=nginx.service\n",
			JournalStream{Identifier: "nginx", Priority: 3, LevelPrefix: true, ForwardToKmsg: true}},
		{"escaped identifier", "PRIORITY=6\nIDENTIFIER=my\\x20app\n", JournalStream{Identifier: "my app", Priority: 6}},
		{"no identifier: the process's name", "PRIORITY=6\n", JournalStream{Identifier: "comm", Priority: 6}},
		{"a newline in the identifier is refused", "IDENTIFIER=a\\nPRIORITY=0\n", JournalStream{Identifier: "comm", Priority: 6}},
		{"a priority out of range is ignored", "PRIORITY=9\n", JournalStream{Identifier: "comm", Priority: 6}},
	} {
		js := JournalStream{Identifier: "comm", Priority: 6}
		parseJournalState([]byte(tc.state), &js)
		if js != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, js, tc.want)
		}
	}
}

func TestJournalHeader(t *testing.T) {
	js := JournalStream{Identifier: "svc", Priority: 5, ForwardToSyslog: true}
	if got, want := string(js.header()), "svc\n\n5\n0\n1\n0\n0\n"; got != want {
		t.Errorf("header %q, want %q", got, want)
	}
}
