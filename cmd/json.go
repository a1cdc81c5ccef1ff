package cmd

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/relocate/relocate/ckpt"
	"github.com/relocate/relocate/ckpt/image"
	"github.com/relocate/relocate/transfer"
)

// The --json contract (schema.json describes it; README "Scripting"):
// every command prints one object on one line, with schema_version,
// command and ok; the same name means the same thing on every command
// (bytes_raw: the memory of the tree; bytes_stored: the image's bytes;
// bytes_sent: on the wire; pages_stored; duration_ms; problems). On
// failure the object has ok false and an error member. These types are
// the contract: they are filled from the library's results, never the
// library's structs themselves, so the engine can change without
// breaking scripts.

// jsonSchemaVersion is bumped when a field changes meaning or goes away
// (adding one is not a change).
const jsonSchemaVersion = 1

type jsonHead struct {
	SchemaVersion int    `json:"schema_version"`
	Command       string `json:"command"`
	OK            bool   `json:"ok"`
}

func head(command string, ok bool) jsonHead {
	return jsonHead{SchemaVersion: jsonSchemaVersion, Command: command, OK: ok}
}

func writeJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

type dumpJSON struct {
	jsonHead
	PID         int   `json:"pid"`
	Processes   int   `json:"processes"`
	Threads     int   `json:"threads"`
	BytesRaw    int64 `json:"bytes_raw"`
	BytesStored int64 `json:"bytes_stored"`
	PagesStored int64 `json:"pages_stored"`
	ZeroPages   int64 `json:"zero_pages"`
	FrozenMS    int64 `json:"frozen_ms"`
	Killed      bool  `json:"killed"`
	NetLocked   bool  `json:"net_locked"`
	// PreCopy: the rounds copied while the process ran (dump --pre-copy).
	PreCopy *ckpt.PreCopyResult `json:"precopy,omitempty"`
	// Externals: descriptors that led outside the tree (recorded as external).
	Externals []ckpt.ExternalNote `json:"externals,omitempty"`
}

func dumpJSONOf(r *ckpt.DumpResult) dumpJSON {
	return dumpJSON{jsonHead: head("dump", true), PID: r.PID, Processes: r.Processes, Threads: r.Threads,
		BytesRaw: r.BytesRaw, BytesStored: r.BytesStored, PagesStored: r.Pages, ZeroPages: r.ZeroPages,
		FrozenMS: r.FrozenMS, Killed: r.Killed, NetLocked: r.NetLocked, PreCopy: r.PreCopy, Externals: r.Externals}
}

type restoreJSON struct {
	jsonHead
	PID         int   `json:"pid"`
	Processes   int   `json:"processes"`
	Threads     int   `json:"threads"`
	BytesStored int64 `json:"bytes_stored"`
	PagesStored int64 `json:"pages_stored"`
	DurationMS  int64 `json:"duration_ms"`
	// Externals: where each descriptor that led outside the tree went.
	Externals []ckpt.ExternalNote `json:"externals,omitempty"`
	// Warnings: what could not be applied (cgroup limits).
	Warnings []string `json:"warnings,omitempty"`
}

func restoreJSONOf(r *ckpt.RestoreResult) restoreJSON {
	return restoreJSON{jsonHead: head("restore", true), PID: r.PID, Processes: r.Processes, Threads: r.Threads,
		BytesStored: r.BytesRead, PagesStored: r.Pages, DurationMS: r.Duration.Milliseconds(),
		Externals: r.Externals, Warnings: r.Warnings}
}

type migrateJSON struct {
	jsonHead
	PID         int    `json:"pid"`
	TargetPID   int    `json:"target_pid"`
	Dest        string `json:"dest"`
	Processes   int    `json:"processes"`
	Threads     int    `json:"threads"`
	BytesRaw    int64  `json:"bytes_raw"`
	BytesSent   int64  `json:"bytes_sent"`
	FrozenMS    int64  `json:"frozen_ms"`
	RestoreMS   int64  `json:"restore_ms"`
	DurationMS  int64  `json:"duration_ms"`
	Uploaded    bool   `json:"uploaded"`
	TimeNS      bool   `json:"timens"`
	Unconfirmed bool   `json:"unconfirmed"`
	// PreCopy: the rounds copied while the process ran (--precopy=auto).
	PreCopy *ckpt.PreCopyResult `json:"precopy,omitempty"`
}

func migrateJSONOf(r *transfer.MigrateResult) migrateJSON {
	return migrateJSON{jsonHead: head("migrate", true), PID: r.PID, TargetPID: r.TargetPID, Dest: r.Dest,
		Processes: r.Processes, Threads: r.Threads, BytesRaw: r.BytesRaw, BytesSent: r.BytesSent,
		FrozenMS: r.FrozenMS, RestoreMS: r.RestoreMS, DurationMS: r.TotalMS, Uploaded: r.Uploaded,
		TimeNS: r.TimeNS, Unconfirmed: r.Unconfirmed, PreCopy: r.PreCopy}
}

type checkJSON struct {
	jsonHead
	Dest     string            `json:"dest,omitempty"` // check HOST
	PID      int               `json:"pid,omitempty"`  // check HOST --pid
	Problems []string          `json:"problems"`
	Checks   []ckpt.Capability `json:"checks,omitempty"` // check (this machine)
	Error    *jsonError        `json:"error,omitempty"`  // when not ok
}

// failed fills in the error member of a check that found problems.
func (c checkJSON) failed(err error) checkJSON {
	e := errorJSONOf("check", ExitError, "", problemsError{err, c.Problems}).Error
	c.Error = &e
	return c
}

// errorJSON is printed on stdout (where the result would have gone) when
// a command with --json fails.
type errorJSON struct {
	jsonHead
	Error jsonError `json:"error"`
}

type jsonError struct {
	ExitCode int      `json:"exit_code"`
	Phase    string   `json:"phase,omitempty"` // the step that failed: survey, connect, ..., dump, restore
	Message  string   `json:"message"`
	Problems []string `json:"problems"`
	Expected bool     `json:"expected"` // false: an internal error (a bug)
}

func errorJSONOf(command string, code int, phase string, err error) errorJSON {
	problems := []string{}
	var refused *transfer.RefusedError
	if errors.As(err, &refused) {
		problems = append(problems, refused.Problems...)
	}
	var pe problemsError
	if errors.As(err, &pe) {
		problems = append(problems, pe.problems...)
	}
	return errorJSON{jsonHead: head(command, false), Error: jsonError{ExitCode: code, Phase: phase,
		Message: oneLine(err), Problems: problems, Expected: expected(err)}}
}

// jsonDone is a failure the command already described in its JSON
// object: Main prints it on stderr only.
type jsonDone struct{ error }

func (e jsonDone) Unwrap() error { return e.error }

// problemsError is an expected failure with a list of reasons (check).
type problemsError struct {
	error
	problems []string
}

func (e problemsError) Expected() bool { return true }
func (e problemsError) Unwrap() error  { return e.error }

// commandName is the name --json uses for the command c ran as: the root
// is "migrate", a sub-command its own name ("check", "dump", ...).
func commandName(path string) string {
	parts := strings.Fields(path)
	if len(parts) <= 1 {
		return "migrate"
	}
	return parts[1]
}

// inspectJSON is the curated inspect --json: named fields, addresses in
// hex, no registers or raw kernel structures unless --raw.
type inspectJSON struct {
	jsonHead
	Image      inspectImage     `json:"image"`
	Processes  []inspectProcess `json:"processes"`
	Stats      *inspectStats    `json:"stats,omitempty"`
	Checkpoint *ckpt.Checkpoint `json:"checkpoint,omitempty"` // --raw only
	Error      *jsonError       `json:"error,omitempty"`
}

type inspectImage struct {
	Producer string `json:"producer"`
	Created  string `json:"created"`
	Hostname string `json:"hostname"`
	Kernel   string `json:"kernel"`
	Arch     string `json:"arch"`
	PageSize int    `json:"page_size"`
}

type inspectProcess struct {
	PID      int              `json:"pid"`
	PPID     int              `json:"ppid"`
	PGID     int              `json:"pgid"`
	SID      int              `json:"sid"`
	Comm     string           `json:"comm"`
	Cmdline  []string         `json:"cmdline"`
	Exe      string           `json:"exe"`
	Cwd      string           `json:"cwd"`
	UID      int              `json:"uid"`
	GID      int              `json:"gid"`
	Zombie   bool             `json:"zombie"`
	Stopped  bool             `json:"stopped"`
	Threads  []inspectThread  `json:"threads"`
	Mappings []inspectMapping `json:"mappings"`
	FDs      []inspectFD      `json:"fds"`
	Handlers int              `json:"signal_handlers"`
	Timers   int              `json:"timers"`
}

type inspectThread struct {
	TID  int    `json:"tid"`
	Comm string `json:"comm"`
}

type inspectMapping struct {
	Start       string `json:"start"` // "0x7f..."
	End         string `json:"end"`
	Perms       string `json:"perms"` // "r-xp"
	Kind        string `json:"kind"`
	Name        string `json:"name"`
	Bytes       uint64 `json:"bytes"`
	BytesStored uint64 `json:"bytes_stored"` // of its pages in the image, uncompressed
}

type inspectFD struct {
	FD          int    `json:"fd"`
	Kind        string `json:"kind"`
	What        string `json:"what"`
	Access      string `json:"access"` // "r", "w", "rw", with ",append", ",nonblock"
	BytesStored int64  `json:"bytes_stored"`
}

type inspectStats struct {
	BytesRaw    uint64 `json:"bytes_raw"`
	BytesStored int64  `json:"bytes_stored"`
	Records     uint64 `json:"records"`
	PagesStored uint64 `json:"pages_stored"`
	ZeroPages   uint64 `json:"zero_pages"`
	PageRecords int    `json:"page_records"`
	BlobRecords int    `json:"blob_records"`
}

func inspectJSONOf(rep *inspectReport, raw bool) inspectJSON {
	h := rep.Header
	out := inspectJSON{jsonHead: head("inspect", rep.Error == ""), Processes: []inspectProcess{},
		Image: inspectImage{Producer: h.Producer, Created: h.Created.UTC().Format("2006-01-02T15:04:05Z"),
			Hostname: h.Hostname, Kernel: h.Kernel, Arch: h.Arch, PageSize: h.PageSize}}
	if raw {
		out.Checkpoint = rep.Checkpoint
	}
	if cp := rep.Checkpoint; cp != nil {
		for _, p := range cp.Processes {
			out.Processes = append(out.Processes, inspectProcessOf(cp, &p))
		}
	}
	if st := rep.Stats; st != nil {
		out.Stats = &inspectStats{BytesRaw: st.RawBytes, BytesStored: st.Bytes, Records: st.Records,
			PagesStored: st.Pages, ZeroPages: st.ZeroPages, PageRecords: st.PageRecords, BlobRecords: st.Blobs}
	}
	return out
}

func inspectProcessOf(cp *ckpt.Checkpoint, p *ckpt.Process) inspectProcess {
	ip := inspectProcess{PID: p.PID, PPID: p.PPID, PGID: p.PGID, SID: p.SID, Comm: p.Comm, Cmdline: p.Cmdline,
		Exe: p.Exe, Cwd: p.Cwd, UID: p.Creds.UID[0], GID: p.Creds.GID[0], Zombie: p.Zombie, Stopped: p.Stopped != 0,
		Handlers: len(p.SigActions), Timers: len(p.Timers),
		Threads: []inspectThread{}, Mappings: []inspectMapping{}, FDs: []inspectFD{}}
	if ip.Cmdline == nil {
		ip.Cmdline = []string{}
	}
	for _, t := range p.Threads {
		ip.Threads = append(ip.Threads, inspectThread{TID: t.TID, Comm: t.Comm})
	}
	for _, v := range p.VMAs {
		ip.Mappings = append(ip.Mappings, inspectMapping{Start: fmt.Sprintf("%#x", v.Start), End: fmt.Sprintf("%#x", v.End),
			Perms: perms(v), Kind: v.Kind, Name: v.Name, Bytes: v.End - v.Start, BytesStored: v.Pages * image.PageSize})
	}
	for _, fd := range p.FDs {
		if fd.File < 0 || fd.File >= len(cp.Files) {
			continue // an image that does not hold together; inspect says so elsewhere
		}
		f := cp.Files[fd.File]
		ip.FDs = append(ip.FDs, inspectFD{FD: fd.FD, Kind: f.Kind, What: f.Describe(), Access: accMode(f.Flags), BytesStored: f.Size})
	}
	return ip
}

// wantsJSON reports whether the command that ran was asked for --json
// (also when its flags could not be parsed).
func wantsJSON(c *cobra.Command) bool {
	if c != nil {
		if f := c.Flags().Lookup("json"); f != nil && f.Value.String() == "true" {
			return true
		}
	}
	for _, a := range os.Args[1:] {
		if a == "--" {
			break
		}
		if a == "--json" || a == "--json=true" {
			return true
		}
	}
	return false
}
