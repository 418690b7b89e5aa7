<?php
/**
 * Deleting the plugin removes its settings and what it remembered about forms, on every site of a network.
 * Posts keep their shortcodes and blocks (they are the site's content); with the plugin gone they show nothing.
 *
 * @package formrelay
 */

if ( ! defined( 'WP_UNINSTALL_PLUGIN' ) ) {
	exit;
}

/**
 * Remove the plugin's options and transients from the current site.
 */
function formrelay_uninstall_site() {
	global $wpdb;
	delete_option( 'formrelay_relay_url' );
	delete_option( 'formrelay_other_relays' );
	delete_option( 'formrelay_stylesheet' );
	// phpcs:ignore WordPress.DB.DirectDatabaseQuery -- transients have no "delete by prefix" API.
	$wpdb->query(
		$wpdb->prepare(
			"DELETE FROM {$wpdb->options} WHERE option_name LIKE %s OR option_name LIKE %s",
			$wpdb->esc_like( '_transient_formrelay_' ) . '%',
			$wpdb->esc_like( '_transient_timeout_formrelay_' ) . '%'
		)
	);
}

if ( is_multisite() ) {
	foreach ( get_sites(
		array(
			'fields' => 'ids',
			'number' => 0,
		)
	) as $formrelay_site ) {
		switch_to_blog( $formrelay_site );
		formrelay_uninstall_site();
		restore_current_blog();
	}
} else {
	formrelay_uninstall_site();
}
