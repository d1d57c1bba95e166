package configs_test

import (
	"fmt"
	"os"
	"strings"

	"github.com/ofitec/pgproxy/configs"
)

// What `pgproxy check --config F` does: load, print the redacted effective
// config, or print the problems and exit 1.
func ExampleLoad() {
	cfg, err := configs.Load(configs.LoadOptions{
		Path:    "pgproxy.yaml",
		Environ: []string{"PGPROXY_HEALTH_PASSWORD=monitor_pass", "PGPROXY_ROUTING_MAX_LAG=2s"},
	})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	out, err := cfg.Redacted().YAML()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	// Print the health and routing sections only.
	s := string(out)
	s = s[strings.Index(s, "health:"):strings.Index(s, "  fallback:")]
	fmt.Print(s)
	// Output:
	// health:
	//   interval: 500ms
	//   timeout: 1s
	//   user: pgproxy_monitor
	//   password: '********'
	//   database: postgres
	// routing:
	//   max_lag: 2s
	//   max_lag_bytes: 0
}

// A bad file: every problem, each naming its key.
func ExampleLoad_errors() {
	_, err := configs.Load(configs.LoadOptions{Path: "testdata/bad.yaml"})
	fmt.Println(err)
	// Output:
	// config: unknown key "routing.max_lagg" (testdata/bad.yaml:7)
	// config: listen[1].addr: must be host:port, got "127.0.0.1"
	// config: routing.fallback: must be "primary" or "reject", got "primry"
}
