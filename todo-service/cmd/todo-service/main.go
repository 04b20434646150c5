// Command todo-service serves the todo.v1.TodoService gRPC API. It verifies
// the access tokens of the auth service offline, with public keys fetched
// from the auth service's JWKS endpoint.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"example.com/todoapp/todo-service/internal/app"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if err := app.Run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "todo-service: %v\n", err)
		os.Exit(1)
	}
}
