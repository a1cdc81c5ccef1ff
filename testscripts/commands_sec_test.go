package testscripts

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"strings"

	"github.com/rogpeppe/go-internal/testscript"

	"github.com/relocate/relocate/ckpt/image"
)

// Commands that forge images, for the hostile-input scripts.
func init() {
	commands["rewritemeta"] = cmdRewritemeta
	commands["metabomb"] = cmdMetabomb
}

// cmdRewritemeta: rewritemeta FILE OLD NEW replaces OLD by NEW (once) in
// the metadata record of the image FILE and writes it back with valid
// checksums: what a crafted image looks like to a reader.
func cmdRewritemeta(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 3, "rewritemeta FILE OLD NEW")
	path := ts.MkAbs(args[0])
	in, err := os.ReadFile(path)
	ts.Check(err)
	r, err := image.NewReader(bytes.NewReader(in))
	ts.Check(err)
	var out bytes.Buffer
	w, err := image.NewWriter(&out, r.Header(), image.WriterOptions{})
	ts.Check(err)
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		ts.Check(err)
		switch rec.Kind {
		case image.KindMeta:
			if !bytes.Contains(rec.Meta, []byte(args[1])) {
				ts.Fatalf("rewritemeta: %q is not in the metadata of %s", args[1], args[0])
			}
			err = w.WriteMeta(json.RawMessage(bytes.Replace(rec.Meta, []byte(args[1]), []byte(args[2]), 1)))
		case image.KindPages:
			buf := w.PageBuffer()[:0]
			err = w.WritePages(rec.Pages.PID, rec.Pages.Addr, append(buf, rec.Pages.Data...))
		case image.KindBlob:
			err = w.WriteBlob(rec.Blob.ID, rec.Blob.Offset, bytes.Clone(rec.Blob.Data))
		}
		ts.Check(err)
	}
	ts.Check(w.Close())
	ts.Check(os.WriteFile(path, out.Bytes(), 0o600))
}

// cmdMetabomb: metabomb FILE N writes an image whose metadata names N
// empty processes: 3 bytes of JSON each, hundreds of bytes each decoded.
func cmdMetabomb(ts *testscript.TestScript, neg bool, args []string) {
	usage(ts, !neg && len(args) == 2, "metabomb FILE N")
	var out bytes.Buffer
	w, err := image.NewWriter(&out, image.Header{Arch: "amd64"}, image.WriterOptions{})
	ts.Check(err)
	n := atoi(ts, args[1])
	meta := `{"root":1,"processes":[` + strings.Repeat("{},", n) + `{}]}`
	ts.Check(w.WriteMeta(json.RawMessage(meta)))
	ts.Check(w.Close())
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), out.Bytes(), 0o600))
}
