// Command nanoswitch runs one cluster's virtual network as a helper process;
// see package nanoswitch/switchmain, which it is.
package main

import (
	"os"

	"github.com/qcluster/qcluster/nanoswitch/switchmain"
)

func main() { os.Exit(switchmain.Main(os.Args[1:])) }
