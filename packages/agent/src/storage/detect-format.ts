import { constants } from "node:fs";
import { open } from "node:fs/promises";

/** What a file's first bytes say it is. */
export type DetectedFormat =
  | { readonly kind: "known"; readonly format: "qcow2" | "vmdk" | "vdi" | "vhdx" | "vpc" | "raw"; readonly iso: boolean }
  | { readonly kind: "refused"; readonly format: string };

/** Bytes read: up to the ISO 9660 volume descriptor at 0x8001. */
const HEAD_BYTES = 0x8001 + 5;

const starts = (head: Buffer, magic: string | Buffer, at = 0): boolean => {
  const m = typeof magic === "string" ? Buffer.from(magic, "latin1") : magic;
  return head.length >= at + m.length && head.subarray(at, at + m.length).equals(m);
};

/**
 * The format of an untrusted file from its magic bytes, as qemu's probes read them but
 * without letting qemu guess: the result is then passed to qemu-img with `-f`. Formats
 * qemu knows but the agent does not take (QED, LUKS, Parallels, Bochs, cloop) are
 * refused by name; anything without a known magic is raw (an ISO is raw with `iso` set).
 */
export async function detectFormat(path: string): Promise<DetectedFormat> {
  // O_NOFOLLOW and O_NONBLOCK: a symlink swapped in fails, a FIFO does not block the agent.
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  let head: Buffer;
  try {
    const buf = Buffer.alloc(HEAD_BYTES);
    const { bytesRead } = await fh.read(buf, 0, HEAD_BYTES, 0);
    head = buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
  if (starts(head, "QFI\xfb")) return { kind: "known", format: "qcow2", iso: false };
  if (starts(head, "KDMV") || starts(head, "COWD") || starts(head, "# Disk DescriptorFile")) return { kind: "known", format: "vmdk", iso: false };
  if (starts(head, Buffer.from([0x7f, 0x10, 0xda, 0xbe]), 0x40)) return { kind: "known", format: "vdi", iso: false };
  if (starts(head, "vhdxfile")) return { kind: "known", format: "vhdx", iso: false };
  if (starts(head, "conectix")) return { kind: "known", format: "vpc", iso: false };
  const refused: [string, string][] = [
    ["QED\0", "qed"],
    ["LUKS\xba\xbe", "luks"],
    ["WithoutFreeSpace", "parallels"],
    ["WithouFreSpacExt", "parallels"],
    ["Bochs Virtual HD Image", "bochs"],
    ["#!/bin/sh\n#V2.0 Format", "cloop"],
  ];
  for (const [magic, format] of refused) if (starts(head, magic)) return { kind: "refused", format };
  return { kind: "known", format: "raw", iso: starts(head, "CD001", 0x8001) };
}
