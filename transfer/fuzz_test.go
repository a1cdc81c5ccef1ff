package transfer

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzResolveTarget feeds ssh_config files and destinations to the
// resolution a migration starts with: any input ends in a target or an
// error, never a panic or a hang.
func FuzzResolveTarget(f *testing.F) {
	f.Add("Host db2\n  HostName 10.0.0.2\n  User admin\n  Port 2222\n  IdentityFile ~/.ssh/%h-%r\n", "db2")
	f.Add("Host *\n  StrictHostKeyChecking accept-new\n  UserKnownHostsFile ~/kh /dev/null\n", "root@[::1]:22")
	f.Add("Match host x\n  ConnectTimeout 3\nInclude nothing\n", "u@h@x:70000")
	f.Add("Host a\n  HostName %h.%%.%z\n  IdentityAgent none\n", "a")
	home := f.TempDir()
	f.Setenv("HOME", home)
	path := filepath.Join(home, "config")
	f.Add("Match exec \"true\" host a\n  User x\n", "a")
	// Never run what the fuzzer writes.
	saved := matchExec
	matchExec = func(_ *configEval, cmd string) (bool, error) { return len(cmd)%2 == 0, nil }
	f.Cleanup(func() { matchExec = saved })
	f.Fuzz(func(t *testing.T, config, dest string) {
		if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		tg, err := resolveTarget(dest, SSHOptions{ConfigFile: path}, systemFiles{})
		if err == nil && (tg.address() == "" || tg.name() == "") {
			t.Fatalf("resolved %q to an empty target", dest)
		}
	})
}

// FuzzFrames feeds the target's side of the control protocol: any byte
// stream ends in an error or io.EOF at the end frame, never a panic or
// an allocation beyond the caps.
func FuzzFrames(f *testing.F) {
	var good bytes.Buffer
	fw := &frameWriter{w: &good}
	_ = fw.sendJSON(frameHello, hello{Protocol: ProtocolVersion})
	_, _ = fw.Write([]byte("image bytes"))
	_ = fw.send(frameEnd, nil)
	_ = fw.send(frameCommit, nil)
	f.Add(good.Bytes())
	f.Add([]byte{frameAbort, 0, 0, 0, 3, 'w', 'h', 'y'})
	f.Add([]byte{frameData, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr := newFrameReader(bytes.NewReader(b))
		if _, _, err := fr.next(); err != nil {
			return
		}
		if _, err := io.Copy(io.Discard, fr); err != nil {
			return
		}
		_ = fr.decision()
	})
}
