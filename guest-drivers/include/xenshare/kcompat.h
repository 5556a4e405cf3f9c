/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * What the modules' parsers of peer-written bytes (<module>/parse.c) may
 * use, so the same file builds in the kernel and in userspace (the
 * libFuzzer targets in guest-drivers/fuzz/ and the layout check). A
 * parse.c includes only this header and "wire.h": no allocation, no
 * locks, no shared-memory access; it takes a private copy and returns a
 * parsed struct or a negative errno.
 */
#ifndef XENSHARE_KCOMPAT_H
#define XENSHARE_KCOMPAT_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/errno.h>
#include <linux/string.h>
#include <linux/kernel.h>
#include <asm/byteorder.h>
#else
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <endian.h>
#include <linux/types.h>
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s16 s16;
typedef __s32 s32;
typedef __s64 s64;
#define le16_to_cpu(x) le16toh(x)
#define le32_to_cpu(x) le32toh(x)
#define le64_to_cpu(x) le64toh(x)
#define cpu_to_le16(x) htole16(x)
#define cpu_to_le32(x) htole32(x)
#define cpu_to_le64(x) htole64(x)
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#endif

#endif /* XENSHARE_KCOMPAT_H */
