<?php
/**
 * Plugin Name:       formrelay
 * Description:       Put a formrelay form on a page with a shortcode or a block: the form is rendered in the visitor's browser from the relay's description and sent to your CRM through your relay.
 * Version:           0.1.0
 * Requires at least: 6.1
 * Requires PHP:      7.4
 * Author:            formrelay
 * License:           MIT
 * License URI:       https://opensource.org/licenses/MIT
 * Text Domain:       formrelay
 * Domain Path:       /languages
 *
 * @package formrelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

define( 'FORMRELAY_VERSION', '0.1.0' );
define( 'FORMRELAY_FILE', __FILE__ );
define( 'FORMRELAY_DIR', plugin_dir_path( __FILE__ ) );

require_once FORMRELAY_DIR . 'includes/i18n.php';
require_once FORMRELAY_DIR . 'includes/relay.php';
require_once FORMRELAY_DIR . 'includes/embed.php';
require_once FORMRELAY_DIR . 'includes/block.php';
require_once FORMRELAY_DIR . 'includes/rest.php';
require_once FORMRELAY_DIR . 'includes/settings.php';

add_action( 'init', 'formrelay_load_textdomain', 1, 0 );
add_action( 'change_locale', 'formrelay_load_textdomain', 10, 1 );
add_filter( 'load_script_translation_file', 'formrelay_script_translation_file', 10, 3 );
add_action( 'init', 'formrelay_register_shortcode' );
add_action( 'init', 'formrelay_register_block' );
add_filter( 'script_loader_tag', 'formrelay_defer_before_6_3', 10, 2 );
add_action( 'rest_api_init', 'formrelay_register_rest_routes' );
add_action( 'admin_init', 'formrelay_register_settings' );
add_action( 'admin_menu', 'formrelay_add_settings_page' );
add_filter( 'plugin_action_links_' . plugin_basename( __FILE__ ), 'formrelay_settings_link' );
