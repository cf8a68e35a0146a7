// Command hello is a test guest: it loads its modules, says hello with the
// name of a device it can only see if they loaded, and powers off.
package main

import (
	"fmt"
	"os"

	"github.com/qcluster/qcluster/internal/testvm/guest"
)

func main() {
	guest.Setup()
	_, err := os.Stat("/sys/class/misc/hw_random")
	fmt.Printf("testvm-hello: hw_random=%v\n", err == nil)
	guest.PowerOff()
}
