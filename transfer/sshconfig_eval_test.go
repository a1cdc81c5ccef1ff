package transfer

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// sshGCase is one destination resolved by ssh -G and by us.
type sshGCase struct {
	name   string
	config string // written to FILE; "INC" in it is replaced by a second file's path
	inc    string // the second file, for Include
	dest   string
	o      SSHOptions
}

var sshGCorpus = []sshGCase{
	{name: "plain alias", dest: "a", config: `
Host a
  HostName 10.1.1.1
  User alice
  Port 2222
  IdentityFile ~/.ssh/a_key
  IdentityFile /k/%h-%r
  CertificateFile /k/a-cert.pub
Host *
  User nobody
  Port 1
  IdentityFile /k/all
`},
	{name: "first value wins, later Host * fills in", dest: "b", config: `
Host b
  ServerAliveInterval 5
Host *
  ServerAliveInterval 9
  ServerAliveCountMax 7
  ConnectTimeout 4
  HostKeyAlias Shared-Alias
  IdentitiesOnly yes
  BatchMode yes
  StrictHostKeyChecking accept-new
`},
	{name: "negated pattern", dest: "web1", config: `
Host web* !web1
  User wrong
Host web?
  User right
`},
	{name: "proxyjump chain", dest: "inner", config: `
Host inner
  HostName %h.internal
  ProxyJump u@bastion:2200,second
  ProxyCommand nc %h %p
`},
	{name: "proxycommand blocks proxyjump", dest: "pc", config: `
Host pc
  ProxyCommand ssh -W %h:%p jump
Host *
  ProxyJump other
`},
	{name: "proxyjump none lets a proxycommand in", dest: "c", config: `
Host c
  ProxyJump none
Host *
  ProxyCommand nc %h %p
`},
	{name: "proxycommand none", dest: "d", config: `
Host d
  ProxyCommand none
  ProxyJump y
`},
	{name: "match host after HostName", dest: "short", config: `
Host short
  HostName long.example.org
Match host *.example.org
  User matched
  Port 2022
`},
	{name: "match user sees the user so far", dest: "e", config: `
Match originalhost e user bob
  Port 99
Host e
  User bob
Match user bob
  Port 100
`},
	{name: "match exec with tokens", dest: "x", config: `
Host x
  HostName 10.9.9.9
Match exec "test %h = 10.9.9.9 && test %n = x"
  User execd
Match exec false
  Port 7
Match !exec false
  ServerAliveInterval 3
`},
	{name: "match final", dest: "f", config: `
Match final
  User finaluser
Host f
  Port 2200
`},
	{name: "include in a host block", dest: "inc", config: `
Host other
  Include INC
Host inc
  Include INC
Host *
  User fallback
`, inc: `
User included
Port 4444
`},
	{name: "key=value and quotes", dest: "q", config: `
Host=q
  User = "quoted"
  IdentityFile "/path with space/key"
  UserKnownHostsFile /kh/one "/kh/two files"
`},
	{name: "command line wins", dest: "cli@a", o: SSHOptions{Port: 3022, Options: []string{"ServerAliveInterval=11", "HostName 10.2.2.2", "User ignored"}, Jump: "j1,j2:23"}, config: `
Host a
  HostName 10.1.1.1
  User alice
  Port 2222
  ServerAliveInterval 5
  ProxyJump nope
`},
	{name: "match localuser, canonical, all", dest: "lu", config: `
Match canonical
  Port 1
Match localuser LOCALUSER host lu
  User local-matched
Match all
  Port 2345
`},
	{name: "comments", dest: "cm", config: `
# a comment
Host cm # trailing comment
  User cmuser # another
`},
}

// sshG runs ssh -G and returns its settings.
func sshG(t *testing.T, file string, c sshGCase) map[string][]string {
	t.Helper()
	args := []string{"-G", "-F", file}
	if c.o.Port != 0 {
		args = append(args, "-p", strconv.Itoa(c.o.Port))
	}
	if c.o.Jump != "" {
		args = append(args, "-J", c.o.Jump)
	}
	for _, o := range c.o.Options {
		args = append(args, "-o", o)
	}
	args = append(args, c.dest)
	cmd := exec.Command("ssh", args...)
	cmd.Stdin = nil
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ssh %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	got := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		got[k] = append(got[k], v)
	}
	return got
}

func yesNo(s string) string {
	switch strings.ToLower(s) {
	case "yes", "true":
		return "yes"
	case "", "no", "false":
		return "no"
	}
	return s
}

// TestSSHConfigMatchesOpenSSH resolves a corpus of configurations with ssh
// -G and with relocate and compares the settings relocate uses.
func TestSSHConfigMatchesOpenSSH(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("ssh is not installed")
		}
		t.Skip("ssh is not installed (openssh-client)")
	}
	me := currentAccount()
	for _, c := range sshGCorpus {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, "config")
			cfg := strings.ReplaceAll(c.config, "LOCALUSER", me.name)
			if c.inc != "" {
				inc := filepath.Join(dir, "included")
				if err := os.WriteFile(inc, []byte(c.inc), 0o600); err != nil {
					t.Fatal(err)
				}
				cfg = strings.ReplaceAll(cfg, "INC", inc)
			}
			if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			g := sshG(t, file, c)
			o := c.o
			o.ConfigFile = file
			tgt, err := resolveTarget(c.dest, o, systemFiles{config: "/nonexistent", knownHosts: nil})
			if err != nil {
				t.Fatal(err)
			}
			d, _ := parseDest(c.dest)
			lines, err := commandLine(d, o)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := evalSSHConfig(d.host, lines, sshConfigFiles(file, me.home, systemFiles{}), me)
			if err != nil {
				t.Fatal(err)
			}
			one := func(k string) string {
				if v := g[k]; len(v) > 0 {
					return v[0]
				}
				return ""
			}
			check := func(key, ours, theirs string) {
				t.Helper()
				if ours != theirs {
					t.Errorf("%s: relocate has %q, ssh -G %q", key, ours, theirs)
				}
			}
			check("user", tgt.user, one("user"))
			check("hostname", strings.ToLower(tgt.host), strings.ToLower(one("hostname")))
			check("port", strconv.Itoa(tgt.port), one("port"))
			check("hostkeyalias", tgt.hostKeyAlias, one("hostkeyalias"))
			check("proxyjump", tgt.proxyJump, one("proxyjump"))
			pc := raw.first("proxycommand")
			if strings.EqualFold(pc, "none") || tgt.proxyCommand == "" {
				pc = ""
			}
			check("proxycommand", pc, one("proxycommand"))
			ct := raw.first("connecttimeout")
			if ct == "" {
				ct = "none"
			}
			check("connecttimeout", ct, one("connecttimeout"))
			sai := raw.first("serveraliveinterval")
			if sai == "" {
				sai = "0"
			}
			check("serveraliveinterval", sai, one("serveraliveinterval"))
			check("serveralivecountmax", strconv.Itoa(tgt.aliveMissed), one("serveralivecountmax"))
			check("identitiesonly", yesNo(raw.first("identitiesonly")), yesNo(one("identitiesonly")))
			check("batchmode", yesNo(raw.first("batchmode")), yesNo(one("batchmode")))
			shk := raw.first("stricthostkeychecking")
			if shk == "" {
				shk = "ask"
			}
			theirs := one("stricthostkeychecking")
			if theirs == "true" {
				theirs = "yes"
			}
			check("stricthostkeychecking", shk, theirs)
			check("userknownhostsfile", strings.Join(tgt.userKnownHosts, " "), one("userknownhostsfile"))
			if ids := raw.vals["identityfile"]; len(ids) > 0 {
				if !reflect.DeepEqual(ids, g["identityfile"]) {
					t.Errorf("identityfile: relocate has %q, ssh -G %q", ids, g["identityfile"])
				}
			}
			if !reflect.DeepEqual(raw.vals["certificatefile"], g["certificatefile"]) {
				t.Errorf("certificatefile: relocate has %q, ssh -G %q", raw.vals["certificatefile"], g["certificatefile"])
			}
		})
	}
}

func TestSSHConfigWarnsOfIgnoredKeys(t *testing.T) {
	me := currentAccount()
	dir := t.TempDir()
	file := filepath.Join(dir, "config")
	if err := os.WriteFile(file, []byte(`
Host a
  SendEnv LANG
  Ciphers aes256-ctr
  KexAlgorithms curve25519-sha256
Host b
  AddressFamily inet
Host *
  Ciphers aes128-ctr
`), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := evalSSHConfig("a", [][]string{{"CanonicalizeHostname", "yes"}}, sshConfigFiles(file, me.home, systemFiles{}), me)
	if err != nil {
		t.Fatal(err)
	}
	// SendEnv is about interactive sessions; b's AddressFamily is not a's.
	want := []string{"CanonicalizeHostname", "Ciphers", "KexAlgorithms"}
	if !reflect.DeepEqual(s.ignored, want) {
		t.Errorf("ignored = %q, want %q", s.ignored, want)
	}
}

func TestSSHConfigErrors(t *testing.T) {
	me := currentAccount()
	dir := t.TempDir()
	for _, c := range []struct{ config, want string }{
		{"Match\n", ":1: Match without a criterion"},
		{"Host a\n  User\n", ":2: User without a value"},
		{"Match bogus x\n", `:1: unknown Match criterion "bogus"`},
		{"Host *\n  User \"open\n", ":2: unterminated quote"},
		{"Include " + filepath.Join(dir, "loop") + "\n", "Include nested too deeply"},
	} {
		file := filepath.Join(dir, "loop")
		if err := os.WriteFile(file, []byte(c.config), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := evalSSHConfig("a", nil, sshConfigFiles(file, me.home, systemFiles{}), me)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("config %q: error %v, want %q", c.config, err, c.want)
		}
	}
	for _, o := range []string{"Host=x", "User", "Match all"} {
		if _, err := parseOptionFlag(o); err == nil {
			t.Errorf("-o %q accepted", o)
		}
	}
}

func TestWildMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, s string
		want       bool
	}{
		{"*", "", true}, {"a*", "abc", true}, {"a?c", "abc", true}, {"a?c", "ac", false},
		{"*.example.org", "x.example.org", true}, {"*.example.org", "example.org", false},
		{"10.0.*.1", "10.0.99.1", true}, {"a*b*c", "aXbYc", true}, {"a*b*c", "aXbY", false},
	} {
		if got := wildMatch(c.pattern, c.s); got != c.want {
			t.Errorf("wildMatch(%q, %q) = %v", c.pattern, c.s, got)
		}
	}
}
