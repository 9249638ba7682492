// SPDX-License-Identifier: GPL-2.0
/*
 * kmk_broken: builds for Linux 6.1 and stops the build for 6.12 and later
 * with one clear compiler error, for kmodkit's per-(package, kernel)
 * failure tests. (digimend-dkms shows the same with a real API change:
 * 6.12's report_fixup returns const __u8 *.)
 */
#include <linux/module.h>
#include <linux/version.h>

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#error "kmk_broken: Linux 6.12 and later are not supported by this driver"
#endif

static int __init kmk_broken_init(void)
{
	return 0;
}

static void __exit kmk_broken_exit(void)
{
}

module_init(kmk_broken_init);
module_exit(kmk_broken_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmodkit test package: does not compile for 6.12");
MODULE_VERSION("1.0");
