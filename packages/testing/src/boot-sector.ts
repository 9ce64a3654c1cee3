/** What the test boot sector prints on the first serial port. */
export const BOOT_SECTOR_MARKER = "QUANTIX-DISK-BOOTED";

/**
 * A 512-byte MBR boot sector (x86 real mode) that writes BOOT_SECTOR_MARKER to COM1
 * (port 0x3F8) and halts: the smallest disk image a BIOS boots, for firmware-boot tests.
 * Hand-assembled; offsets in the comments.
 *
 *   00 FC          cld
 *   01 31 C0       xor ax, ax
 *   03 8E D8       mov ds, ax
 *   05 BA F8 03    mov dx, 0x3F8
 *   08 BE 16 7C    mov si, 0x7C16        ; the message, at 0x7C00 + 0x16
 *   0B AC          lodsb
 *   0C 84 C0       test al, al
 *   0E 74 03       jz 0x13
 *   10 EE          out dx, al
 *   11 EB F8       jmp 0x0B
 *   13 F4          hlt
 *   14 EB FD       jmp 0x13
 *   16 ...         the message, CR LF, NUL
 *  1FE 55 AA       boot signature
 */
export function bootSector(): Buffer {
  const code = [0xfc, 0x31, 0xc0, 0x8e, 0xd8, 0xba, 0xf8, 0x03, 0xbe, 0x16, 0x7c, 0xac, 0x84, 0xc0, 0x74, 0x03, 0xee, 0xeb, 0xf8, 0xf4, 0xeb, 0xfd];
  const sector = Buffer.alloc(512);
  Buffer.from(code).copy(sector, 0);
  Buffer.from(`${BOOT_SECTOR_MARKER}\r\n\0`, "latin1").copy(sector, 0x16);
  sector[510] = 0x55;
  sector[511] = 0xaa;
  return sector;
}
