package transfer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// This file evaluates ssh_config the way OpenSSH's readconf.c does, for one
// destination: -o options first, then the files in order; a key that takes
// one value keeps the first value an applicable line gives it (IdentityFile
// and CertificateFile add up); Host matches the name as typed, Match host the
// HostName known so far, Match user the remote user known so far; Include
// reads files (globs; relative to ~/.ssh, or /etc/ssh for the system file)
// in the context of the block that includes them; Match exec runs its
// command with /bin/sh; a "Match final" block makes a second pass as in ssh.
// Match canonical and tagged never match (relocate does not canonicalize
// host names and has no -P).

// maxIncludeDepth is OpenSSH's READCONF_MAX_DEPTH.
const maxIncludeDepth = 16

// multiKeys add up over all applicable lines instead of keeping the first.
var multiKeys = map[string]bool{"identityfile": true, "certificatefile": true}

// sshHonoured are the keys relocate implements.
var sshHonoured = map[string]bool{
	"hostname": true, "user": true, "port": true, "identityfile": true, "identitiesonly": true,
	"identityagent": true, "certificatefile": true, "stricthostkeychecking": true,
	"userknownhostsfile": true, "globalknownhostsfile": true, "hashknownhosts": true,
	"connecttimeout": true, "proxyjump": true, "proxycommand": true, "hostkeyalias": true,
	"serveraliveinterval": true, "serveralivecountmax": true, "batchmode": true,
	"host": true, "match": true, "include": true,
}

// sshNotApplicable are keys about what an interactive session does (ttys,
// forwardings, environment, escape characters, logging, multiplexing) or
// about authentication methods other than keys: a migration runs one
// command with public-key authentication, so they change nothing and are
// read without a warning (the README lists them).
var sshNotApplicable = map[string]bool{
	"loglevel": true, "logverbose": true, "sendenv": true, "setenv": true, "forwardagent": true,
	"forwardx11": true, "forwardx11trusted": true, "forwardx11timeout": true, "xauthlocation": true,
	"localforward": true, "remoteforward": true, "dynamicforward": true, "clearallforwardings": true,
	"exitonforwardfailure": true, "gatewayports": true, "requesttty": true, "escapechar": true,
	"enableescapecommandline": true, "permitlocalcommand": true, "localcommand": true,
	"controlmaster": true, "controlpath": true, "controlpersist": true, "visualhostkey": true,
	"compression": true, "tcpkeepalive": true, "checkhostip": true, "updatehostkeys": true,
	"addkeystoagent": true, "usekeychain": true, "passwordauthentication": true,
	"kbdinteractiveauthentication": true, "challengeresponseauthentication": true,
	"gssapiauthentication": true, "gssapidelegatecredentials": true, "gssapikeyexchange": true,
	"gssapitrustdns": true, "hostbasedauthentication": true, "numberofpasswordprompts": true,
	"preferredauthentications": true, "ipqos": true, "stdinnull": true, "forkafterauthentication": true,
	"sessiontype": true, "streamlocalbindmask": true, "streamlocalbindunlink": true,
	"permitremoteopen": true, "syslogfacility": true, "fingerprinthash": true, "ignoreunknown": true,
}

// sshSettings is the outcome: for each key (lower case) the arguments of
// the line that set it, or of every line for multiKeys.
type sshSettings struct {
	vals    map[string][]string
	ignored []string // keys relocate does not implement, in the order met
}

func (s *sshSettings) first(key string) string {
	if v := s.vals[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (s *sshSettings) set(key string, args []string) {
	if multiKeys[key] {
		s.vals[key] = append(s.vals[key], args...)
		return
	}
	if _, done := s.vals[key]; !done {
		s.vals[key] = args
	}
}

// configEval is one evaluation: the destination and the state of the pass.
type configEval struct {
	host     string // the host as typed (lower case), what Host matches
	me       sshLocalAccount
	s        *sshSettings
	final    bool // the second pass
	sawFinal bool
	warned   map[string]bool
}

// evalSSHConfig evaluates command-line option lines (already "key value")
// and then the files for host. userFiles tells which files' relative
// Includes are under ~/.ssh (the others' under /etc/ssh).
func evalSSHConfig(host string, cmdline [][]string, files []configFile, me sshLocalAccount) (*sshSettings, error) {
	e := &configEval{host: strings.ToLower(host), me: me, s: &sshSettings{vals: map[string][]string{}}, warned: map[string]bool{}}
	for pass := 0; pass < 2; pass++ {
		for _, line := range cmdline {
			active := true
			if err := e.apply("command line", 0, line, &active, false, 0); err != nil {
				return nil, fmt.Errorf("-o %s: %w", strings.Join(line, " "), err)
			}
		}
		for _, f := range files {
			if err := e.readFile(f.path, f.user, 0, f.mustExist); err != nil {
				return nil, err
			}
		}
		if !e.sawFinal || e.final {
			break
		}
		e.final = true
	}
	return e.s, nil
}

// configFile is an ssh_config file to read.
type configFile struct {
	path      string
	user      bool // a user's file: relative Includes are under ~/.ssh
	mustExist bool
}

func (e *configEval) readFile(path string, user bool, depth int, mustExist bool) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !mustExist {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ssh config %s: %w", path, unwrapPathError(err))
	}
	active := true
	for i, text := range strings.Split(string(data), "\n") {
		line, err := splitConfigLine(text)
		if err != nil {
			return fmt.Errorf("ssh config %s:%d: %w", path, i+1, err)
		}
		if len(line) == 0 {
			continue
		}
		if err := e.apply(path, i+1, line, &active, user, depth); err != nil {
			return fmt.Errorf("ssh config %s:%d: %w", path, i+1, err)
		}
	}
	return nil
}

// splitConfigLine splits a line into the key and its arguments: "Key
// value", "Key=value" or "Key = value", arguments in double quotes may hold
// spaces, and a word starting with # begins a comment. ProxyCommand and
// LocalCommand keep the rest of the line as one argument, as ssh does.
func splitConfigLine(text string) ([]string, error) {
	text = strings.TrimSpace(strings.TrimSuffix(text, "\r"))
	if text == "" || text[0] == '#' {
		return nil, nil
	}
	end := strings.IndexAny(text, " \t=")
	if end < 0 {
		return []string{text}, nil
	}
	key, rest := text[:end], strings.TrimLeft(text[end:], " \t")
	if strings.HasPrefix(rest, "=") {
		rest = strings.TrimLeft(rest[1:], " \t")
	}
	switch strings.ToLower(key) {
	case "proxycommand", "localcommand", "remotecommand", "knownhostscommand":
		return []string{key, rest}, nil
	}
	words, err := splitWords(rest)
	return append([]string{key}, words...), err
}

// splitWords is ssh's argv_split: double or single quotes group, a
// backslash escapes a quote, a word starting with # ends the line.
func splitWords(s string) ([]string, error) {
	var words []string
	for i := 0; i < len(s); {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i == len(s) {
			break
		}
		if s[i] == '#' {
			break
		}
		var b strings.Builder
		var quote byte
		for ; i < len(s); i++ {
			c := s[i]
			switch {
			case c == '\\' && i+1 < len(s) && (s[i+1] == '"' || s[i+1] == '\'' || s[i+1] == '\\' || (quote == 0 && s[i+1] == ' ')):
				i++
				b.WriteByte(s[i])
				continue
			case quote != 0 && c == quote:
				quote = 0
				continue
			case quote == 0 && (c == '"' || c == '\''):
				quote = c
				continue
			case quote == 0 && (c == ' ' || c == '\t'):
			default:
				b.WriteByte(c)
				continue
			}
			break
		}
		if quote != 0 {
			return nil, errors.New("unterminated quote")
		}
		words = append(words, b.String())
	}
	return words, nil
}

// apply evaluates one line; active is the state of the current Host or
// Match block.
func (e *configEval) apply(file string, lineNo int, line []string, active *bool, user bool, depth int) error {
	key := strings.ToLower(line[0])
	args := line[1:]
	switch key {
	case "host":
		if len(args) == 0 {
			return errors.New("Host without a pattern")
		}
		*active = matchHostList(e.host, args)
		return nil
	case "match":
		m, err := e.match(args)
		*active = m
		return err
	case "include":
		if len(args) == 0 {
			return errors.New("Include without a file")
		}
		if !*active {
			return nil
		}
		return e.include(args, user, depth)
	}
	if len(args) == 0 {
		return fmt.Errorf("%s without a value", line[0])
	}
	if !*active {
		return nil
	}
	switch key {
	case "proxyjump", "proxycommand":
		// One of the two, whichever comes first, as ssh does: a
		// ProxyCommand (even "none") keeps out a later ProxyJump, a
		// ProxyJump other than "none" a later ProxyCommand.
		jump, jumpSet := e.s.vals["proxyjump"]
		_, cmdSet := e.s.vals["proxycommand"]
		if cmdSet || (jumpSet && (key == "proxyjump" || !strings.EqualFold(strings.Join(jump, ""), "none"))) {
			return nil
		}
	}
	if !sshHonoured[key] && !sshNotApplicable[key] && !e.warned[key] {
		e.warned[key] = true
		e.s.ignored = append(e.s.ignored, line[0])
	}
	e.s.set(key, args)
	return nil
}

func (e *configEval) include(args []string, user bool, depth int) error {
	if depth >= maxIncludeDepth {
		return errors.New("Include nested too deeply")
	}
	for _, a := range args {
		p, err := expandTilde(a, e.me.home)
		if err != nil {
			return fmt.Errorf("Include: %w", err)
		}
		if !filepath.IsAbs(p) {
			if user {
				p = filepath.Join(e.me.home, ".ssh", p)
			} else {
				p = filepath.Join("/etc/ssh", p)
			}
		}
		matches, err := filepath.Glob(p)
		if err != nil {
			return fmt.Errorf("Include %s: %w", a, err)
		}
		for _, m := range matches {
			// Regular files only: a FIFO or a device would hang the read.
			if fi, err := os.Stat(m); err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if err := e.readFile(m, user, depth+1, false); err != nil {
				return err
			}
		}
	}
	return nil
}

// match evaluates a Match line's criteria (all must hold).
func (e *configEval) match(args []string) (bool, error) {
	if len(args) == 0 {
		return false, errors.New("Match without a criterion")
	}
	result := true
	for i := 0; i < len(args); i++ {
		crit := strings.ToLower(args[i])
		negate := strings.HasPrefix(crit, "!")
		crit = strings.TrimPrefix(crit, "!")
		var ok bool
		switch crit {
		case "all":
			ok = true
		case "canonical":
			ok = false
		case "final":
			e.sawFinal = true
			ok = e.final
		default:
			if i+1 == len(args) {
				return false, fmt.Errorf("Match %s without an argument", crit)
			}
			i++
			arg := args[i]
			switch crit {
			case "host":
				ok = matchPatternList(strings.ToLower(e.hostName()), arg)
			case "originalhost":
				ok = matchPatternList(e.host, arg)
			case "user":
				ok = matchPatternList(e.remoteUser(), arg)
			case "localuser":
				ok = matchPatternList(e.me.name, arg)
			case "tagged":
				ok = matchPatternList("", arg)
			case "localnetwork":
				return false, errors.New("Match localnetwork is not supported by relocate")
			case "exec":
				if !result { // ssh skips the command when the line already failed
					continue
				}
				var err error
				if ok, err = matchExec(e, arg); err != nil {
					return false, err
				}
			default:
				return false, fmt.Errorf("unknown Match criterion %q", crit)
			}
		}
		if ok == negate {
			result = false
		}
	}
	return result, nil
}

// hostName is the HostName known so far (%h expanded), else the host.
func (e *configEval) hostName() string {
	if v := e.s.first("hostname"); v != "" {
		if h, err := expandTokens(v, map[byte]string{'h': e.host}); err == nil {
			return h
		}
	}
	return e.host
}

func (e *configEval) remoteUser() string {
	if v := e.s.first("user"); v != "" {
		return v
	}
	return e.me.name
}

func (e *configEval) port() string {
	if v := e.s.first("port"); v != "" {
		return v
	}
	return strconv.Itoa(defaultSSHPort)
}

// matchExec runs Match exec commands; the fuzz test swaps it for one that
// runs nothing.
var matchExec = (*configEval).exec

// exec runs a Match exec command: true when it exits 0.
func (e *configEval) exec(command string) (bool, error) {
	local, _ := os.Hostname()
	short, _, _ := strings.Cut(local, ".")
	cmd, err := expandTokens(command, map[byte]string{
		'h': e.hostName(), 'n': e.host, 'p': e.port(), 'r': e.remoteUser(), 'u': e.me.name,
		'd': e.me.home, 'i': strconv.Itoa(e.me.uid), 'l': local, 'L': short,
	})
	if err != nil {
		return false, fmt.Errorf("Match exec: %w", err)
	}
	c := exec.Command("/bin/sh", "-c", cmd)
	c.Stdin, c.Stdout, c.Stderr = nil, nil, nil
	err = c.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &exit):
		return false, nil
	}
	return false, fmt.Errorf("Match exec %q: %w", cmd, err)
}

// matchHostList is Host's rule: some pattern matches and no negated one.
func matchHostList(host string, patterns []string) bool {
	matched := false
	for _, p := range patterns {
		p = strings.ToLower(p)
		if neg, ok := strings.CutPrefix(p, "!"); ok {
			if wildMatch(neg, host) {
				return false
			}
			continue
		}
		if wildMatch(p, host) {
			matched = true
		}
	}
	return matched
}

// matchPatternList is match_pattern_list: a comma-separated list with the
// same rule.
func matchPatternList(s, list string) bool {
	return matchHostList(strings.ToLower(s), strings.Split(list, ","))
}

// wildMatch matches s against a pattern of * and ?.
func wildMatch(pattern, s string) bool {
	for len(pattern) > 0 {
		switch pattern[0] {
		case '*':
			for len(pattern) > 0 && pattern[0] == '*' {
				pattern = pattern[1:]
			}
			if pattern == "" {
				return true
			}
			for i := 0; i <= len(s); i++ {
				if wildMatch(pattern, s[i:]) {
					return true
				}
			}
			return false
		case '?':
			if s == "" {
				return false
			}
		default:
			if s == "" || s[0] != pattern[0] {
				return false
			}
		}
		pattern, s = pattern[1:], s[1:]
	}
	return s == ""
}

// CheckOptions checks -o settings and -J hops before anything connects.
func CheckOptions(o SSHOptions) error {
	for _, opt := range o.Options {
		if _, err := parseOptionFlag(opt); err != nil {
			return err
		}
	}
	if o.Jump != "" {
		if _, err := parseJumps(o.Jump); err != nil {
			return fmt.Errorf("-J %s: %w", o.Jump, err)
		}
	}
	return nil
}

// parseOptionFlag turns -o "Key=Value" or "Key Value" into a line.
func parseOptionFlag(o string) ([]string, error) {
	line, err := splitConfigLine(o)
	if err != nil {
		return nil, err
	}
	if len(line) < 2 {
		return nil, fmt.Errorf("-o %q: want KEY=VALUE", o)
	}
	switch strings.ToLower(line[0]) {
	case "host", "match", "include":
		return nil, fmt.Errorf("-o %q: %s is not allowed on the command line", o, line[0])
	}
	return line, nil
}
