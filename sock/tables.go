package sock

import (
	"fmt"
	"strings"

	"github.com/google/nftables"
)

// LockTables lists the lock tables installed in this network namespace
// (inet tables whose name starts with "relocate_"), for finding those a
// relocate killed hard left behind.
func LockTables() ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("network lock: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("network lock: list nftables tables: %w", err)
	}
	var names []string
	for _, t := range tables {
		if strings.HasPrefix(t.Name, "relocate_") {
			names = append(names, t.Name)
		}
	}
	return names, nil
}
