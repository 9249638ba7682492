// SPDX-License-Identifier: GPL-2.0
/*
 * kmk_core: the "core" half of kmodkit's test pair of DKMS packages. It
 * exports two GPL symbols that kmk_user (another package) calls, so
 * kmk_user can only be built with this build's Module.symvers passed
 * through KBUILD_EXTRA_SYMBOLS, and only loads after kmk_core. No
 * hardware; init always succeeds.
 */
#include <linux/atomic.h>
#include <linux/module.h>
#include <linux/printk.h>

#include "kmk_core.h"

static atomic_t kmk_core_users = ATOMIC_INIT(0);

int kmk_core_register(const char *name)
{
	pr_info("kmk_core: %s registered (%d users)\n", name,
		atomic_inc_return(&kmk_core_users));
	return 0;
}
EXPORT_SYMBOL_GPL(kmk_core_register);

void kmk_core_unregister(const char *name)
{
	pr_info("kmk_core: %s unregistered (%d users)\n", name,
		atomic_dec_return(&kmk_core_users));
}
EXPORT_SYMBOL_GPL(kmk_core_unregister);

static int __init kmk_core_init(void)
{
	return 0;
}

static void __exit kmk_core_exit(void)
{
}

module_init(kmk_core_init);
module_exit(kmk_core_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmodkit test package: exports for kmk_user");
MODULE_VERSION("1.0");
