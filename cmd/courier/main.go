// Command courier is the one binary: `courier serve` runs a node,
// `courier chat` tries it by hand, `courier bench` loads it.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "courier",
		Short:         "Courier: an end-to-end encrypted messaging backend on virtual actors",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServeCmd(), newChatCmd(), newBenchCmd(), newAdminCmd(), newTokenKeysCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "courier:", userMessage(err))
		os.Exit(1)
	}
}
