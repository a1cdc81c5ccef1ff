package sock

import (
	"fmt"
	"strconv"
	"strings"
)

// checkLockName refuses a table name that is not one of relocate's own
// lock tables (relocate_PID, relocate_listen_PID). Names reach here from
// images, which are untrusted: a crafted one must not make a restore
// delete or add rules to another table (the firewall's).
func checkLockName(name string) error {
	rest, ok := strings.CutPrefix(name, "relocate_")
	if !ok {
		return fmt.Errorf("network lock: %q is not a relocate lock table", name)
	}
	rest = strings.TrimPrefix(rest, "listen_")
	if n, err := strconv.ParseUint(rest, 10, 31); err != nil || n == 0 || strconv.FormatUint(n, 10) != rest {
		return fmt.Errorf("network lock: %q is not a relocate lock table", name)
	}
	return nil
}
