package cmd

import (
	"bufio"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/relocate/relocate/ckpt"
	"github.com/relocate/relocate/ckpt/image"
)

type inspectOptions struct {
	json bool
	raw  bool
}

func (o *inspectOptions) AddFlags(c *cobra.Command) {
	c.Flags().BoolVar(&o.json, "json", false, "print the image's metadata as JSON")
	c.Flags().BoolVar(&o.raw, "raw", false, "with --json: add the whole checkpoint as stored (registers, raw kernel structures; not a stable format)")
}

func newInspectCmd(g *globals) *cobra.Command {
	var o inspectOptions
	c := &cobra.Command{
		Use:   "inspect FILE|-",
		Short: "show what an image holds",
		Long: `inspect prints the process, threads, memory map, descriptors and statistics
of an image. It reads the whole image and fails if it is truncated or
corrupt, after printing what it could decode.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error { return runInspect(c, &o, args[0]) },
	}
	o.AddFlags(c)
	return c
}

// inspectReport is the --json output.
type inspectReport struct {
	Header     image.Header     `json:"header"`
	Checkpoint *ckpt.Checkpoint `json:"checkpoint"`
	Stats      *imageStats      `json:"stats,omitempty"`
	Error      string           `json:"error,omitempty"`
}

type imageStats struct {
	Bytes       int64  `json:"bytes"`
	Records     uint64 `json:"records"`
	Pages       uint64 `json:"pages_stored"`
	ZeroPages   uint64 `json:"zero_pages"`
	RawBytes    uint64 `json:"bytes_raw"`
	PageRecords int    `json:"page_records"`
	Blobs       int    `json:"blob_records"`
}

func runInspect(c *cobra.Command, o *inspectOptions, name string) error {
	f, err := openImage(name)
	if err != nil {
		return err
	}
	defer f.Close()
	r, err := image.NewReader(bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return err
	}
	rep := inspectReport{Header: r.Header()}
	cp, err := ckpt.ReadCheckpoint(r)
	if err == nil {
		rep.Checkpoint = cp
		var st imageStats
		st, err = scanImage(r)
		if err == nil {
			rep.Stats = &st
		}
	}
	out := c.OutOrStdout()
	if o.json {
		if err != nil {
			rep.Error = err.Error()
		}
		j := inspectJSONOf(&rep, o.raw)
		if err != nil {
			e := errorJSONOf("inspect", ExitError, "", err).Error
			j.Error = &e
		}
		if jerr := writeJSON(out, j); jerr != nil {
			return jerr
		}
		if err != nil {
			return jsonDone{err} // the object above has the error
		}
		return nil
	}
	printReport(out, &rep)
	return err
}

func scanImage(r *image.Reader) (imageStats, error) {
	var st imageStats
	for {
		rec, err := r.Next()
		if err == io.EOF {
			tr := r.Trailer()
			st.Bytes = r.Offset()
			st.Records, st.Pages, st.ZeroPages, st.RawBytes = tr.Records, tr.Pages, tr.ZeroPages, tr.RawBytes
			return st, nil
		}
		if err != nil {
			return st, err
		}
		switch rec.Kind {
		case image.KindPages:
			st.PageRecords++
		case image.KindBlob:
			st.Blobs++
		}
	}
}

func printReport(w io.Writer, rep *inspectReport) {
	h := rep.Header
	fmt.Fprintf(w, "image:    %s, created %s on %s (Linux %s, %s)\n", h.Producer,
		h.Created.Format("2006-01-02 15:04:05 MST"), h.Hostname, h.Kernel, h.Arch)
	if rep.Checkpoint == nil {
		return
	}
	for _, p := range rep.Checkpoint.Processes {
		if p.Zombie {
			fmt.Fprintf(w, "zombie:   pid %d %q, child of %d, wait status %#x\n", p.PID, p.Comm, p.PPID, p.WaitStatus)
			continue
		}
		fmt.Fprintf(w, "process:  pid %d %q: %s\n", p.PID, p.Comm, strings.Join(p.Cmdline, " "))
		fmt.Fprintf(w, "          exe %s, cwd %s, ppid %d, pgid %d, sid %d, uid %d, gid %d\n",
			p.Exe, p.Cwd, p.PPID, p.PGID, p.SID, p.Creds.UID[0], p.Creds.GID[0])
		fmt.Fprintf(w, "threads:  %d\n", len(p.Threads))
		for _, t := range p.Threads {
			fmt.Fprintf(w, "          tid %d %q\n", t.TID, t.Comm)
		}
		var mapped, saved uint64
		for _, v := range p.VMAs {
			mapped += v.End - v.Start
			saved += v.Pages * 4096
		}
		fmt.Fprintf(w, "memory:   %d mappings, %s mapped, %s present\n", len(p.VMAs), bytesIEC(int64(mapped)), bytesIEC(int64(saved)))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, v := range p.VMAs {
			fmt.Fprintf(tw, "          %012x-%012x\t%s\t%s\t%s\t%s\t%s\n", v.Start, v.End, perms(v),
				bytesIEC(int64(v.End-v.Start)), bytesIEC(int64(v.Pages*4096)), v.Kind, v.Name)
		}
		tw.Flush()
		fmt.Fprintf(w, "fds:      %d\n", len(p.FDs))
		for _, fd := range p.FDs {
			f := rep.Checkpoint.Files[fd.File]
			what := f.Describe()
			extra := ""
			if f.Size > 0 {
				extra = fmt.Sprintf(", %s carried", bytesIEC(f.Size))
			}
			fmt.Fprintf(w, "          %d\t%s (%s, %s%s)\n", fd.FD, what, f.Kind, accMode(f.Flags), extra)
		}
		fmt.Fprintf(w, "signals:  %d handlers, %d timers\n", len(p.SigActions), len(p.Timers))
	}
	if st := rep.Stats; st != nil {
		ratio := 0.0
		if st.RawBytes > 0 {
			ratio = float64(st.Bytes) / float64(st.RawBytes)
		}
		fmt.Fprintf(w, "stored:   %d pages in %d records (%d zero pages skipped), %s of memory in %s (%.2f), %d blob records\n",
			st.Pages, st.PageRecords, st.ZeroPages, bytesIEC(int64(st.RawBytes)), bytesIEC(st.Bytes), ratio, st.Blobs)
	}
}

func perms(v ckpt.VMA) string {
	b := []byte("---p")
	if v.Prot&unix.PROT_READ != 0 {
		b[0] = 'r'
	}
	if v.Prot&unix.PROT_WRITE != 0 {
		b[1] = 'w'
	}
	if v.Prot&unix.PROT_EXEC != 0 {
		b[2] = 'x'
	}
	if v.Shared {
		b[3] = 's'
	}
	return string(b)
}

func accMode(flags int) string {
	s := map[int]string{unix.O_RDONLY: "r", unix.O_WRONLY: "w", unix.O_RDWR: "rw"}[flags&unix.O_ACCMODE]
	if flags&unix.O_APPEND != 0 {
		s += ",append"
	}
	if flags&unix.O_NONBLOCK != 0 {
		s += ",nonblock"
	}
	return s
}
