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

	"github.com/kevinburke/ssh_config"
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

// sshConfig is the ssh_config files in the order ssh reads them: for a
// key that takes one value the first file that sets it wins.
type sshConfig struct {
	files []*ssh_config.Config
}

// loadSSHConfig reads -F FILE alone when given, else the user's file then the
// system one. Only an explicit file must exist.
func loadSSHConfig(explicit, home string, sys systemFiles) (sshConfig, error) {
	var c sshConfig
	if explicit != "" {
		f, err := readSSHConfig(explicit)
		if err != nil {
			return c, err
		}
		c.files = append(c.files, f)
		return c, nil
	}
	for _, path := range []string{filepath.Join(home, ".ssh", "config"), sys.config} {
		f, err := readSSHConfig(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return c, err
		}
		c.files = append(c.files, f)
	}
	return c, nil
}

func readSSHConfig(path string) (*ssh_config.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ssh config %s: %w", path, unwrapPathError(err))
	}
	c, err := ssh_config.DecodeBytes(data)
	if err != nil {
		return nil, fmt.Errorf("ssh config %s: %w", path, err)
	}
	return c, nil
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

func (c sshConfig) get(alias, key string) (string, error) {
	for _, f := range c.files {
		v, err := f.Get(alias, key)
		if err != nil {
			return "", fmt.Errorf("ssh config %s: %w", key, err)
		}
		if v != "" {
			return v, nil
		}
	}
	return "", nil
}

// getAll gathers a key that may be given many times (IdentityFile) from
// every file, as ssh does.
func (c sshConfig) getAll(alias, key string) ([]string, error) {
	var all []string
	for _, f := range c.files {
		v, err := f.GetAll(alias, key)
		if err != nil {
			return nil, fmt.Errorf("ssh config %s: %w", key, err)
		}
		all = append(all, v...)
	}
	return all, nil
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
	cmdIdentities    []string // -i, tilde-expanded
	cfgIdentities    []string // IdentityFile, expanded
	identitiesOnly   bool
	agentSocket      string // "" when no agent is to be used
	home             string
}

// address is host:port for net.Dial and known_hosts.
func (t *sshTarget) address() string {
	return net.JoinHostPort(t.host, strconv.Itoa(t.port))
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
	cfg, err := loadSSHConfig(o.ConfigFile, me.home, sys)
	if err != nil {
		return nil, err
	}
	r := sshResolver{cfg: cfg, alias: d.host, me: me, sys: sys}
	t := &sshTarget{alias: d.host, home: me.home}
	// In this order: file names may use %h, %r and %p.
	steps := []func() error{
		func() error { return r.hostName(t) },
		func() error { return r.user(t, d.user) },
		func() error { return r.port(t, d.port, o.Port) },
		func() error { return r.timeout(t, o.Timeout) },
		func() error { return r.hostKeyChecking(t) },
		func() error { return r.identities(t, o.Identity) },
		func() error { return r.agent(t) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// sshResolver reads the keys of one host's ssh_config section.
type sshResolver struct {
	cfg   sshConfig
	alias string
	me    sshLocalAccount
	sys   systemFiles
}

func (r sshResolver) hostName(t *sshTarget) error {
	v, err := r.cfg.get(r.alias, "HostName")
	if err != nil || v == "" {
		t.host = r.alias
		return err
	}
	t.host, err = expandTokens(v, map[byte]string{'h': r.alias})
	if err != nil {
		return fmt.Errorf("HostName: %w", err)
	}
	return nil
}

func (r sshResolver) user(t *sshTarget, fromDest string) error {
	t.user = fromDest
	if t.user != "" {
		return nil
	}
	v, err := r.cfg.get(r.alias, "User")
	if err != nil {
		return err
	}
	t.user = v
	if t.user == "" {
		t.user = r.me.name
	}
	if t.user == "" {
		return errors.New("cannot tell which user to log in as: $USER is not set; give user@host")
	}
	return nil
}

func (r sshResolver) port(t *sshTarget, fromDest, fromFlag int) error {
	switch {
	case fromDest != 0:
		t.port = fromDest
	case fromFlag != 0:
		t.port = fromFlag
	default:
		v, err := r.cfg.get(r.alias, "Port")
		if err != nil {
			return err
		}
		if v == "" {
			t.port = defaultSSHPort
			return nil
		}
		if t.port, err = parseSSHPort(v); err != nil {
			return fmt.Errorf("ssh config Port: %w", err)
		}
	}
	return nil
}

func (r sshResolver) timeout(t *sshTarget, fromFlag time.Duration) error {
	if fromFlag > 0 {
		t.timeout = fromFlag
		return nil
	}
	t.timeout = defaultTimeout
	v, err := r.cfg.get(r.alias, "ConnectTimeout")
	if err != nil || v == "" {
		return err
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
	v, err := r.cfg.get(r.alias, key)
	if err != nil {
		return nil, err
	}
	if v == "" {
		return defaults, nil
	}
	if strings.EqualFold(v, "none") {
		return nil, nil
	}
	var paths []string
	for _, f := range strings.Fields(v) {
		p, err := r.expandPath(t, f)
		if err != nil {
			return nil, fmt.Errorf("ssh config %s: %w", key, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

func (r sshResolver) hostKeyChecking(t *sshTarget) error {
	v, err := r.cfg.get(r.alias, "StrictHostKeyChecking")
	if err != nil {
		return err
	}
	if t.strict, err = parseStrict(v); err != nil {
		return fmt.Errorf("ssh config: %w", err)
	}
	if v, err = r.cfg.get(r.alias, "HashKnownHosts"); err != nil {
		return err
	}
	if t.hashKnownHosts, err = parseYesNo("HashKnownHosts", v); err != nil {
		return fmt.Errorf("ssh config: %w", err)
	}
	userDefault := []string{
		filepath.Join(r.me.home, ".ssh", "known_hosts"),
		filepath.Join(r.me.home, ".ssh", "known_hosts2"),
	}
	if t.userKnownHosts, err = r.pathList(t, "UserKnownHostsFile", userDefault); err != nil {
		return err
	}
	t.globalKnownHosts, err = r.pathList(t, "GlobalKnownHostsFile", r.sys.knownHosts)
	return err
}

func (r sshResolver) identities(t *sshTarget, fromFlag []string) error {
	for _, p := range fromFlag {
		e, err := expandTilde(p, r.me.home)
		if err != nil {
			return fmt.Errorf("-i %s: %w", p, err)
		}
		t.cmdIdentities = append(t.cmdIdentities, e)
	}
	files, err := r.cfg.getAll(r.alias, "IdentityFile")
	if err != nil {
		return err
	}
	for _, f := range files {
		if strings.EqualFold(f, "none") {
			continue
		}
		p, err := r.expandPath(t, f)
		if err != nil {
			return fmt.Errorf("ssh config IdentityFile: %w", err)
		}
		t.cfgIdentities = append(t.cfgIdentities, p)
	}
	v, err := r.cfg.get(r.alias, "IdentitiesOnly")
	if err != nil {
		return err
	}
	if t.identitiesOnly, err = parseYesNo("IdentitiesOnly", v); err != nil {
		return fmt.Errorf("ssh config: %w", err)
	}
	return nil
}

// agent finds the ssh-agent socket: IdentityAgent names it (a path, "none",
// or an environment variable such as SSH_AUTH_SOCK), else $SSH_AUTH_SOCK.
func (r sshResolver) agent(t *sshTarget) error {
	v, err := r.cfg.get(r.alias, "IdentityAgent")
	if err != nil {
		return err
	}
	switch {
	case v == "" || v == "SSH_AUTH_SOCK":
		t.agentSocket = os.Getenv("SSH_AUTH_SOCK")
	case strings.EqualFold(v, "none"):
		t.agentSocket = ""
	case strings.HasPrefix(v, "$"):
		t.agentSocket = os.Getenv(strings.Trim(v[1:], "{}"))
	default:
		if t.agentSocket, err = r.expandPath(t, v); err != nil {
			return fmt.Errorf("ssh config IdentityAgent: %w", err)
		}
	}
	return nil
}
