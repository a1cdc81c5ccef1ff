package sock

import (
	"testing"
)

func TestParseProcTCP(t *testing.T) {
	b := []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 641 1 0000000080ad68ff 100 0 0 10 0
   1: 0100007F:AE74 4D0200C0:0050 02 00000000:00000000 03:00000C70 00000000     0        0 9876 3 00000000973f4e39
`)
	e, err := parseProcTCP(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(e) != 2 || e[1].local.String() != "127.0.0.1:44660" || e[1].remote.String() != "192.0.2.77:80" || e[1].state != 2 || e[1].inode != 9876 {
		t.Fatalf("%+v", e)
	}
	b6 := []byte(`  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:A619 B80D0120000000000000000001000000:01BB 02 00000000:00000000 03:00000CEC 00000000     0        0 77 3 00000000a6c0a173
`)
	e, err = parseProcTCP(b6)
	if err != nil {
		t.Fatal(err)
	}
	if len(e) != 1 || e[0].local.String() != "[::ffff:127.0.0.1]:42521" || e[0].remote.String() != "[2001:db8::1]:443" {
		t.Fatalf("%+v", e)
	}
	for _, bad := range []string{"h\n 0: 0100007F 0100007F:0050 02 0 0 0 0 0 1\n", "h\n 0: 0100007F:0050\n", "h\n 0: 0100007G:0050 0100007F:0050 02 0 0 0 0 0 1\n"} {
		if _, err := parseProcTCP([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func FuzzParseProcTCP(f *testing.F) {
	f.Add([]byte("h\n   1: 0100007F:AE74 4D0200C0:0050 02 00000000:00000000 03:00000C70 00000000     0        0 9876 3 0\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		parseProcTCP(b)
	})
}
