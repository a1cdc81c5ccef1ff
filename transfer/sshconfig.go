package transfer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	defaultSSHPort = 22
	defaultTimeout = 10 * time.Second
)

// systemFiles are the machine-wide files ssh reads. They are a parameter,
// not constants, so tests do not depend on what /etc/ssh holds.
type systemFiles struct {
	config     string
	knownHosts []string
}

func defaultSystemFiles() systemFiles {
	return systemFiles{
		config:     "/etc/ssh/ssh_config",
		knownHosts: []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"},
	}
}

// sshDest is what the command line says about the target.
type sshDest struct {
	user string // "" when not given
	host string // alias or address as typed, without brackets
	port int    // 0 when not given
}

// parseDest splits "[user@]host[:port]", "[user@][v6addr]:port" or a bare
// IPv6 address. Like ssh, the user ends at the last "@".
func parseDest(s string) (sshDest, error) {
	var d sshDest
	rest := strings.TrimPrefix(s, "ssh://")
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		d.user, rest = rest[:i], rest[i+1:]
		if d.user == "" {
			return d, fmt.Errorf("destination %q: empty user name before @", s)
		}
	}
	host, port, err := splitHostPort(rest)
	if err != nil {
		return d, fmt.Errorf("destination %q: %w", s, err)
	}
	d.host, d.port = host, port
	return d, nil
}

func splitHostPort(s string) (string, int, error) {
	host, portText, hasPort := s, "", false
	switch {
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, errors.New("missing ]")
		}
		host = s[1:end]
		rest := s[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", 0, fmt.Errorf("unexpected %q after ]", rest)
			}
			portText, hasPort = rest[1:], true
		}
	case strings.Count(s, ":") == 1:
		i := strings.IndexByte(s, ':')
		host, portText, hasPort = s[:i], s[i+1:], true
	}
	// More than one colon without brackets is a bare IPv6 address.
	if host == "" {
		return "", 0, errors.New("no host name")
	}
	if !hasPort {
		return host, 0, nil
	}
	port, err := parseSSHPort(portText)
	return host, port, err
}

func parseSSHPort(s string) (int, error) {
	p, err := strconv.Atoi(s)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return p, nil
}

// sshConfigFiles lists the ssh_config files in the order ssh reads them:
// -F FILE alone when given (it must exist), else the user's file then the
// system one.
func sshConfigFiles(explicit, home string, sys systemFiles) []configFile {
	if explicit != "" {
		return []configFile{{path: explicit, user: true, mustExist: true}}
	}
	return []configFile{{path: filepath.Join(home, ".ssh", "config"), user: true}, {path: sys.config}}
}

// unwrapPathError drops the path from an *fs.PathError whose caller already
// names the file, so it is not said twice.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

type strictMode int

const (
	strictYes strictMode = iota
	strictNo
	strictAcceptNew
)

func parseStrict(v string) (strictMode, error) {
	switch strings.ToLower(v) {
	case "", "yes", "true", "ask":
		// "ask" would prompt; we run unattended, so it refuses like "yes".
		return strictYes, nil
	case "no", "false", "off":
		return strictNo, nil
	case "accept-new":
		return strictAcceptNew, nil
	}
	return strictYes, fmt.Errorf("StrictHostKeyChecking %q is not yes, no, accept-new or ask", v)
}

func parseYesNo(key, v string) (bool, error) {
	switch strings.ToLower(v) {
	case "", "no", "false":
		return false, nil
	case "yes", "true":
		return true, nil
	}
	return false, fmt.Errorf("%s %q is not yes or no", key, v)
}

// sshLocalAccount is who runs relocate: $USER and $HOME, with /etc/passwd
// filling what the environment lacks (as under a bare "env -i").
type sshLocalAccount struct {
	name string
	home string
	uid  int
}

func currentAccount() sshLocalAccount {
	a := sshLocalAccount{name: os.Getenv("USER"), home: os.Getenv("HOME"), uid: os.Getuid()}
	if a.name != "" && a.home != "" {
		return a
	}
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return a
	}
	name, home, ok := passwdEntry(data, a.uid)
	if !ok {
		return a
	}
	if a.name == "" {
		a.name = name
	}
	if a.home == "" {
		a.home = home
	}
	return a
}

// passwdEntry finds uid in the text of /etc/passwd.
func passwdEntry(data []byte, uid int) (name, home string, ok bool) {
	want := strconv.Itoa(uid)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) != 7 || strings.HasPrefix(f[0], "#") || f[0] == "" {
			continue
		}
		if f[2] == want {
			return f[0], f[5], true
		}
	}
	return "", "", false
}

// expandTilde turns a leading "~" into home, as ssh does for paths.
func expandTilde(p, home string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") {
		if strings.HasPrefix(p, "~") {
			return "", fmt.Errorf("path %q: only ~/ is understood, not ~user/", p)
		}
		return p, nil
	}
	if home == "" {
		return "", fmt.Errorf("path %q: $HOME is not set", p)
	}
	return home + p[1:], nil
}

// expandTokens replaces ssh_config's %-tokens; an unknown token is an error,
// as in ssh, rather than a path with a stray "%x" in it.
func expandTokens(s string, tokens map[byte]string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i == len(s) {
			return "", fmt.Errorf("%q ends with a lone %%", s)
		}
		if s[i] == '%' {
			b.WriteByte('%')
			continue
		}
		v, ok := tokens[s[i]]
		if !ok {
			return "", fmt.Errorf("%q: unknown token %%%c", s, s[i])
		}
		b.WriteString(v)
	}
	return b.String(), nil
}

// sshTarget is everything Dial needs, once the command line, the ssh_config
// files and the defaults have been combined.
type sshTarget struct {
	alias            string // host as given on the command line
	user             string
	host             string // HostName: what we connect to and look up in known_hosts
	port             int
	timeout          time.Duration
	strict           strictMode
	hashKnownHosts   bool
	userKnownHosts   []string
	globalKnownHosts []string
	hostKeyAlias     string   // HostKeyAlias: the name known_hosts knows the host by
	cmdIdentities    []string // -i, tilde-expanded
	cfgIdentities    []string // IdentityFile, expanded
	certificates     []string // CertificateFile, expanded
	identitiesOnly   bool
	agentSocket      string // "" when no agent is to be used
	batch            bool   // BatchMode: never ask for a passphrase
	proxyJump        string // ProxyJump hops, "" for none
	proxyCommand     string // ProxyCommand with its tokens expanded, "" for none
	aliveEvery       time.Duration
	aliveMissed      int
	ignored          []string // ssh_config keys set for this host that relocate does not implement
	home             string
	configFile       string // -F, for the jump hosts
}

// address is host:port for net.Dial.
func (t *sshTarget) address() string {
	return net.JoinHostPort(t.host, strconv.Itoa(t.port))
}

// knownHostsName is the host known_hosts is asked about: HostKeyAlias when
// set, as in ssh.
func (t *sshTarget) knownHostsName() string {
	if t.hostKeyAlias != "" {
		return t.hostKeyAlias
	}
	return t.host
}

// name is how messages call the target; the alias is kept when it differs,
// since that is what the user typed.
func (t *sshTarget) name() string {
	n := t.user + "@" + t.address()
	if t.alias != t.host {
		n += " (" + t.alias + ")"
	}
	return n
}

// commandLine turns the flags into ssh_config lines that come before the
// files (the first value wins): the destination's port (more specific than
// -p), -p, -J, -o in order, then the destination's user (ssh lets
// -o User=X override user@host).
func commandLine(d sshDest, o SSHOptions) ([][]string, error) {
	var lines [][]string
	if d.port != 0 {
		lines = append(lines, []string{"Port", strconv.Itoa(d.port)})
	}
	if o.Port != 0 {
		lines = append(lines, []string{"Port", strconv.Itoa(o.Port)})
	}
	if o.Jump != "" {
		lines = append(lines, []string{"ProxyJump", o.Jump})
	}
	for _, opt := range o.Options {
		line, err := parseOptionFlag(opt)
		if err != nil {
			return nil, err
		}
		lines = append(lines, line)
	}
	if d.user != "" {
		lines = append(lines, []string{"User", d.user})
	}
	return lines, nil
}

// resolveTarget applies ssh's precedence: command line, then ssh_config,
// then defaults.
func resolveTarget(dest string, o SSHOptions, sys systemFiles) (*sshTarget, error) {
	d, err := parseDest(dest)
	if err != nil {
		return nil, err
	}
	me := currentAccount()
	if me.home == "" {
		return nil, fmt.Errorf("cannot find the home directory: $HOME is not set and uid %d is not in /etc/passwd", me.uid)
	}
	lines, err := commandLine(d, o)
	if err != nil {
		return nil, err
	}
	s, err := evalSSHConfig(d.host, lines, sshConfigFiles(o.ConfigFile, me.home, sys), me)
	if err != nil {
		return nil, err
	}
	r := sshResolver{s: s, alias: d.host, me: me, sys: sys}
	t := &sshTarget{alias: d.host, home: me.home, ignored: s.ignored, configFile: o.ConfigFile}
	// In this order: file names may use %h, %r and %p.
	steps := []func() error{
		func() error { return r.hostName(t) },
		func() error { return r.user(t) },
		func() error { return r.port(t) },
		func() error { return r.timeout(t, o.Timeout) },
		func() error { return r.hostKeyChecking(t) },
		func() error { return r.identities(t, o.Identity) },
		func() error { return r.agent(t) },
		func() error { return r.proxy(t) },
		func() error { return r.alive(t) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// sshResolver reads the evaluated ssh_config of one host.
type sshResolver struct {
	s     *sshSettings
	alias string
	me    sshLocalAccount
	sys   systemFiles
}

func (r sshResolver) hostName(t *sshTarget) error {
	v := r.s.first("hostname")
	if v == "" {
		t.host = r.alias
		return nil
	}
	var err error
	t.host, err = expandTokens(v, map[byte]string{'h': r.alias})
	if err != nil {
		return fmt.Errorf("HostName: %w", err)
	}
	return nil
}

func (r sshResolver) user(t *sshTarget) error {
	t.user = r.s.first("user")
	if t.user == "" {
		t.user = r.me.name
	}
	if t.user == "" {
		return errors.New("cannot tell which user to log in as: $USER is not set; give user@host")
	}
	return nil
}

func (r sshResolver) port(t *sshTarget) error {
	v := r.s.first("port")
	if v == "" {
		t.port = defaultSSHPort
		return nil
	}
	var err error
	if t.port, err = parseSSHPort(v); err != nil {
		return fmt.Errorf("ssh config Port: %w", err)
	}
	return nil
}

func (r sshResolver) timeout(t *sshTarget, fromFlag time.Duration) error {
	if fromFlag > 0 {
		t.timeout = fromFlag
		return nil
	}
	t.timeout = defaultTimeout
	v := r.s.first("connecttimeout")
	if v == "" || strings.EqualFold(v, "none") {
		return nil
	}
	secs, err := strconv.Atoi(v)
	if err != nil || secs < 0 {
		return fmt.Errorf("ssh config ConnectTimeout %q is not a number of seconds", v)
	}
	if secs > 0 {
		t.timeout = time.Duration(secs) * time.Second
	}
	return nil
}

// tokens are the %-expansions ssh offers in file names.
func (r sshResolver) tokens(t *sshTarget) map[byte]string {
	local, _ := os.Hostname()
	short, _, _ := strings.Cut(local, ".")
	return map[byte]string{
		'd': r.me.home,
		'u': r.me.name,
		'i': strconv.Itoa(r.me.uid),
		'l': short,
		'L': short,
		'h': t.host,
		'n': r.alias,
		'p': strconv.Itoa(t.port),
		'r': t.user,
	}
}

func (r sshResolver) expandPath(t *sshTarget, p string) (string, error) {
	p, err := expandTilde(p, r.me.home)
	if err != nil {
		return "", err
	}
	return expandTokens(p, r.tokens(t))
}

// pathList reads a key holding space-separated file names, where "none"
// means no file at all.
func (r sshResolver) pathList(t *sshTarget, key string, defaults []string) ([]string, error) {
	v, set := r.s.vals[key]
	if !set {
		return defaults, nil
	}
	if len(v) == 1 && strings.EqualFold(v[0], "none") {
		return nil, nil
	}
	var paths []string
	for _, f := range v {
		p, err := r.expandPath(t, f)
		if err != nil {
			return nil, fmt.Errorf("ssh config %s: %w", key, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func (r sshResolver) hostKeyChecking(t *sshTarget) error {
	var err error
	if t.strict, err = parseStrict(r.s.first("stricthostkeychecking")); err != nil {
		return fmt.Errorf("ssh config: %w", err)
	}
	if t.hashKnownHosts, err = parseYesNo("HashKnownHosts", r.s.first("hashknownhosts")); err != nil {
		return fmt.Errorf("ssh config: %w", err)
	}
	userDefault := []string{
		filepath.Join(r.me.home, ".ssh", "known_hosts"),
		filepath.Join(r.me.home, ".ssh", "known_hosts2"),
	}
	if t.userKnownHosts, err = r.pathList(t, "userknownhostsfile", userDefault); err != nil {
		return err
	}
	if t.globalKnownHosts, err = r.pathList(t, "globalknownhostsfile", r.sys.knownHosts); err != nil {
		return err
	}
	if v := r.s.first("hostkeyalias"); v != "" && !strings.EqualFold(v, "none") {
		t.hostKeyAlias = strings.ToLower(v)
	}
	return nil
}

func (r sshResolver) identities(t *sshTarget, fromFlag []string) error {
	for _, p := range fromFlag {
		e, err := expandTilde(p, r.me.home)
		if err != nil {
			return fmt.Errorf("-i %s: %w", p, err)
		}
		t.cmdIdentities = append(t.cmdIdentities, e)
	}
	for _, key := range []string{"identityfile", "certificatefile"} {
		for _, f := range r.s.vals[key] {
			if strings.EqualFold(f, "none") {
				continue
			}
			p, err := r.expandPath(t, f)
			if err != nil {
				return fmt.Errorf("ssh config %s: %w", key, err)
			}
			if key == "identityfile" {
				t.cfgIdentities = append(t.cfgIdentities, p)
			} else {
				t.certificates = append(t.certificates, p)
			}
		}
	}
	var err error
	if t.identitiesOnly, err = parseYesNo("IdentitiesOnly", r.s.first("identitiesonly")); err != nil {
		return fmt.Errorf("ssh config: %w", err)
	}
	if t.batch, err = parseYesNo("BatchMode", r.s.first("batchmode")); err != nil {
		return fmt.Errorf("ssh config: %w", err)
	}
	return nil
}

// agent finds the ssh-agent socket: IdentityAgent names it (a path, "none",
// or an environment variable such as SSH_AUTH_SOCK), else $SSH_AUTH_SOCK.
func (r sshResolver) agent(t *sshTarget) error {
	v := r.s.first("identityagent")
	switch {
	case v == "" || v == "SSH_AUTH_SOCK":
		t.agentSocket = os.Getenv("SSH_AUTH_SOCK")
	case strings.EqualFold(v, "none"):
		t.agentSocket = ""
	case strings.HasPrefix(v, "$"):
		t.agentSocket = os.Getenv(strings.Trim(v[1:], "{}"))
	default:
		var err error
		if t.agentSocket, err = r.expandPath(t, v); err != nil {
			return fmt.Errorf("ssh config IdentityAgent: %w", err)
		}
	}
	return nil
}

// proxy reads ProxyJump or ProxyCommand (only one is ever set, see apply).
func (r sshResolver) proxy(t *sshTarget) error {
	if v := strings.Join(r.s.vals["proxyjump"], " "); v != "" && !strings.EqualFold(v, "none") {
		t.proxyJump = v
		if _, err := parseJumps(v); err != nil {
			return fmt.Errorf("ProxyJump: %w", err)
		}
	}
	if v := r.s.first("proxycommand"); v != "" && !strings.EqualFold(v, "none") {
		cmd, err := expandTokens(v, r.tokens(t))
		if err != nil {
			return fmt.Errorf("ProxyCommand: %w", err)
		}
		t.proxyCommand = cmd
	}
	return nil
}

// alive reads ServerAliveInterval and ServerAliveCountMax. Unlike ssh,
// an interval of 0 (ssh's default: no keepalives) keeps relocate's own:
// every wait on the peer of a migration must end.
func (r sshResolver) alive(t *sshTarget) error {
	t.aliveEvery, t.aliveMissed = keepAliveEvery, keepAliveMissed
	if v := r.s.first("serveraliveinterval"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("ssh config ServerAliveInterval %q is not a number of seconds", v)
		}
		if n > 0 {
			t.aliveEvery = time.Duration(n) * time.Second
		}
	}
	if v := r.s.first("serveralivecountmax"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("ssh config ServerAliveCountMax %q is not a positive number", v)
		}
		t.aliveMissed = n
	}
	return nil
}
