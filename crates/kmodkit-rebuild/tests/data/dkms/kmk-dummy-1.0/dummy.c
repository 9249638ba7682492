// SPDX-License-Identifier: GPL-2.0
/*
 * dummy: kmodkit's stand-in for a vendor build that replaces an in-tree
 * module of the same name (drivers/net/dummy.ko). It registers nothing;
 * init always succeeds. The alias is the in-tree module's, so a lookup by
 * alias (ip link add type dummy -> rtnl-link-dummy) meets both.
 */
#include <linux/module.h>

static int __init kmk_dummy_init(void)
{
	return 0;
}

static void __exit kmk_dummy_exit(void)
{
}

module_init(kmk_dummy_init);
module_exit(kmk_dummy_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmodkit test package: vendor build of the in-tree dummy module");
MODULE_VERSION("1.0-kmk");
MODULE_ALIAS("rtnl-link-dummy");
