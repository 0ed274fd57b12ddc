// Command apiref writes the TrafficPolicy field reference into a docs page, between the page's
// "<!-- BEGIN GENERATED trafficpolicy-fields" and "<!-- END GENERATED trafficpolicy-fields" lines, from
// the generated CRD. scripts/generate.sh runs it; `make test` fails when the page is stale.
//
//	go run ./operator/test/docs/apiref CRD.yaml PAGE.md
package main

import (
	"fmt"
	"os"

	"meshplane.dev/operator/test/docs"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "apiref:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: apiref CRD.yaml PAGE.md")
	}
	crd, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	table, err := docs.FieldTable(crd, "v1alpha1")
	if err != nil {
		return err
	}
	page, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	out, err := docs.Splice(string(page), "trafficpolicy-fields", table)
	if err != nil {
		return fmt.Errorf("%s: %w", args[1], err)
	}
	return os.WriteFile(args[1], []byte(out), 0o644)
}
