// SPDX-License-Identifier: GPL-2.0
/*
 * kmk_user: the "user" half of kmodkit's test pair of DKMS packages. It
 * calls kmk_core_register from the kmk-core package, so its __versions
 * entry for that symbol carries the CRC of the kmk_core build it was
 * linked against, and modprobe loads kmk_core first. No hardware; init
 * always succeeds when kmk_core is loaded.
 */
#include <linux/module.h>

/* kmk-core's exports (kmk_core.h ships with the other package). */
int kmk_core_register(const char *name);
void kmk_core_unregister(const char *name);

static int __init kmk_user_init(void)
{
	return kmk_core_register(KBUILD_MODNAME);
}

static void __exit kmk_user_exit(void)
{
	kmk_core_unregister(KBUILD_MODNAME);
}

module_init(kmk_user_init);
module_exit(kmk_user_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmodkit test package: uses kmk_core's exports");
MODULE_VERSION("1.0");
