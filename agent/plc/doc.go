// Package plc is the station's handshake with the line's PLC over Modbus TCP: the PLC
// triggers an inspection by writing a new trigger sequence number (and the part's serial)
// and reads the verdict back from registers the station writes.
//
// # Basics
//
// All registers are 16-bit holding registers (function codes 3, 6 and 16); the out block is
// also readable as input registers (function code 4) at the same addresses. Addresses are
// offsets from plc.in_base and plc.out_base. The station is the Modbus server (the PLC
// connects) or a client (it polls the PLC's registers); the register logic is the same.
//
// # Caveats
//
// A trigger that gets no verdict within the answer timeout is answered with the fail-safe
// (NG, or NO_DECISION with the hold register raised): the PLC never waits forever, and a
// part is never passed by default.
package plc
