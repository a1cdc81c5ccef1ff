package ckpt

import (
	"strings"
	"testing"
)

func TestParseMQStatus(t *testing.T) {
	for _, c := range []struct {
		in   string
		want mqStatus
		err  string
	}{
		{in: "QSIZE:0          NOTIFY:0     SIGNO:0     NOTIFY_PID:0     \n"},
		{in: "QSIZE:270        NOTIFY:0     SIGNO:10    NOTIFY_PID:21347 \n", want: mqStatus{QSize: 270, NotifyPID: 21347}},
		{in: "QSIZE:18446744073709551615 NOTIFY:2 SIGNO:0 NOTIFY_PID:1\n", want: mqStatus{QSize: 1<<64 - 1, NotifyPID: 1}},
		{in: "NOTIFY_PID:7 QSIZE:3 EXTRA:whatever", want: mqStatus{QSize: 3, NotifyPID: 7}}, // order, unknown fields
		{in: "", err: "no QSIZE"},
		{in: "QSIZE:1 NOTIFY:0", err: "no QSIZE or NOTIFY_PID"},
		{in: "QSIZE:1 NOTIFY_PID", err: "field"},
		{in: "QSIZE:-1 NOTIFY_PID:0", err: "QSIZE"},
		{in: "QSIZE:1 NOTIFY_PID:-4", err: "NOTIFY_PID"},
		{in: "QSIZE:1 NOTIFY_PID:99999999999999999999", err: "NOTIFY_PID"},
		{in: "QSIZE:0x10 NOTIFY_PID:0", err: "QSIZE"},
	} {
		got, err := parseMQStatus([]byte(c.in))
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q: err = %v, want one mentioning %q", c.in, err, c.err)
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("%q = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func TestValidMQName(t *testing.T) {
	for name, ok := range map[string]bool{
		"/jobs":                          true,
		"/a":                             true,
		"/with space (deleted)":          true,
		"/" + strings.Repeat("x", 255):   true,
		"/" + strings.Repeat("x", 256):   false,
		"":                               false,
		"/":                              false,
		"jobs":                           false,
		"//jobs":                         false,
		"/a/b":                           false,
		"/.":                             false,
		"/..":                            false,
		"/../etc":                        false,
		"/nul\x00":                       false,
		"/\xff":                          false,
		"/.hidden":                       true,
		"/..two":                         true,
		"/" + strings.Repeat("é", 127):   true, // 254 bytes
		"/" + strings.Repeat("é", 128):   false,
		"/relocate-mq-4242.relocate-1-0": true,
	} {
		if err := validMQName(name); (err == nil) != ok {
			t.Errorf("validMQName(%q) = %v, want ok %v", name, err, ok)
		}
	}
}

func TestMQueueValidate(t *testing.T) {
	good := func() *MQueue {
		return &MQueue{Name: "/q", Ino: 9, MaxMsg: 4, MsgSize: 16, Mode: 0o640,
			Msgs: []MQMsg{{Prio: 9, Text: []byte("a")}, {Prio: 9, Text: nil}, {Prio: 0, Text: make([]byte, 16)}}}
	}
	if err := good().validate(); err != nil {
		t.Fatalf("a valid queue is refused: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*MQueue)
		want string
	}{
		{"bad name", func(q *MQueue) { q.Name = "/../x" }, "more than one component"},
		{"no capacity", func(q *MQueue) { q.MaxMsg = 0 }, "0 messages"},
		{"negative size", func(q *MQueue) { q.MsgSize = -1 }, "of -1 bytes"},
		{"beyond HARD_MSGMAX", func(q *MQueue) { q.MaxMsg = hardMsgMax + 1 }, "65537 messages"},
		{"beyond HARD_MSGSIZEMAX", func(q *MQueue) { q.MsgSize = hardMsgSizeMax + 1 }, "16777217 bytes"},
		{"mode bits", func(q *MQueue) { q.Mode = 0o4755 }, "mode"},
		{"more messages than room", func(q *MQueue) { q.MaxMsg = 2 }, "3 messages, room for 2"},
		{"message too long", func(q *MQueue) { q.MsgSize = 8 }, "message 2 of 16 bytes"},
		{"priority too high", func(q *MQueue) { q.Msgs[0].Prio = mqPrioMax; q.Msgs[1].Prio = mqPrioMax }, "priority 32768"},
		{"not in receive order", func(q *MQueue) { q.Msgs[2].Prio = 10 }, "not in receive order"},
		{"too many bytes", func(q *MQueue) {
			q.MaxMsg, q.MsgSize = 3, hardMsgSizeMax
			q.Msgs = []MQMsg{{Text: make([]byte, hardMsgSizeMax)}, {Text: []byte("x")}}
		}, "more than 16777216 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			q := good()
			c.edit(q)
			if err := q.validate(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a refusal mentioning %q", err, c.want)
			}
		})
	}
}
