// Command auth-service signs users up and in and issues the access and
// refresh tokens that the other services verify. Run it with -h for the
// flags and subcommands.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"example.com/todoapp/auth-service/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "auth-service:", err)
		stop()
		os.Exit(1)
	}
}
