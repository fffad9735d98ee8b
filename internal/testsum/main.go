package main

import (
	"fmt"
	"os"
)

func main() {
	sum, err := summarise(os.Stdin, os.Stdout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testsum: %v\n", err)
		os.Exit(1)
	}
	if !sum.ok() {
		os.Exit(1)
	}
}
