<?php
/**
 * Settings -> formrelay: the relay's address (Settings API: options.php checks the nonce and
 * manage_options), the other relays editors may name, the stylesheet, and a connection test.
 *
 * @package formrelay
 */

if ( ! defined( 'ABSPATH' ) ) {
	exit;
}

/** How many other relays may be allowed. */
const FORMRELAY_MAX_RELAYS = 20;

function formrelay_add_settings_page() {
	$page = add_options_page( __( 'formrelay settings', 'formrelay' ), 'formrelay', 'manage_options', 'formrelay', 'formrelay_settings_page' );
	// The connection test is checked before the page starts (a refused nonce must answer 403, not a 200 page).
	add_action( 'load-' . $page, 'formrelay_test_connection' );
}

/**
 * A "Settings" link beside the plugin on the Plugins screen.
 *
 * @param string[] $links The plugin's links.
 * @return string[]
 */
function formrelay_settings_link( $links ) {
	array_unshift( $links, '<a href="' . esc_url( admin_url( 'options-general.php?page=formrelay' ) ) . '">' . esc_html__( 'Settings', 'formrelay' ) . '</a>' );
	return $links;
}

function formrelay_register_settings() {
	register_setting(
		'formrelay',
		'formrelay_relay_url',
		array(
			'type'              => 'string',
			'default'           => '',
			'sanitize_callback' => 'formrelay_sanitize_relay_url',
		)
	);
	register_setting(
		'formrelay',
		'formrelay_other_relays',
		array(
			'type'              => 'array',
			'default'           => array(),
			'sanitize_callback' => 'formrelay_sanitize_other_relays',
		)
	);
	register_setting(
		'formrelay',
		'formrelay_stylesheet',
		array(
			'type'              => 'string',
			'default'           => '1',
			'sanitize_callback' => 'formrelay_sanitize_flag',
		)
	);
	add_settings_section( 'formrelay_relay', __( 'Your relay', 'formrelay' ), 'formrelay_section_intro', 'formrelay' );
	add_settings_field( 'formrelay_relay_url', __( 'Relay address', 'formrelay' ), 'formrelay_field_relay_url', 'formrelay', 'formrelay_relay', array( 'label_for' => 'formrelay_relay_url' ) );
	add_settings_field( 'formrelay_other_relays', __( 'Other relays', 'formrelay' ), 'formrelay_field_other_relays', 'formrelay', 'formrelay_relay', array( 'label_for' => 'formrelay_other_relays' ) );
	add_settings_field( 'formrelay_stylesheet', __( 'Style', 'formrelay' ), 'formrelay_field_stylesheet', 'formrelay', 'formrelay_relay', array( 'label_for' => 'formrelay_stylesheet' ) );
}

/**
 * Keep a valid relay address; refuse anything else with a message, keeping the address saved before.
 *
 * @param mixed $value What was typed.
 * @return string
 */
function formrelay_sanitize_relay_url( $value ) {
	$value = is_string( $value ) ? trim( $value ) : '';
	if ( '' === $value ) {
		return '';
	}
	$relay = formrelay_normalize_relay_url( $value );
	if ( is_wp_error( $relay ) ) {
		formrelay_settings_error( 'formrelay_relay_url', $relay->get_error_message() );
		return formrelay_relay_url();
	}
	return $relay;
}

/**
 * The other relays, one address a line; each invalid one is named in a message and left out.
 *
 * @param mixed $value A textarea's text, or a list.
 * @return string[]
 */
function formrelay_sanitize_other_relays( $value ) {
	$lines  = is_array( $value ) ? $value : preg_split( '/[\r\n]+/', is_string( $value ) ? $value : '' );
	$relays = array();
	foreach ( $lines as $line ) {
		$line = is_string( $line ) ? trim( $line ) : '';
		if ( '' === $line ) {
			continue;
		}
		$relay = formrelay_normalize_relay_url( $line );
		if ( is_wp_error( $relay ) ) {
			formrelay_settings_error( 'formrelay_other_relays', $relay->get_error_message() );
		} elseif ( ! in_array( $relay, $relays, true ) ) {
			$relays[] = $relay;
		}
	}
	if ( count( $relays ) > FORMRELAY_MAX_RELAYS ) {
		/* translators: %d: how many relays may be listed. */
		formrelay_settings_error( 'formrelay_other_relays', sprintf( __( 'At most %d other relays can be allowed; the first ones were kept.', 'formrelay' ), FORMRELAY_MAX_RELAYS ) );
	}
	return array_slice( $relays, 0, FORMRELAY_MAX_RELAYS );
}

/**
 * A checkbox: '1' when ticked, '0' when not.
 *
 * @param mixed $value The posted value.
 * @return string
 */
function formrelay_sanitize_flag( $value ) {
	return ( '1' === $value || 1 === $value || true === $value ) ? '1' : '0';
}

/**
 * A message above the settings, once (WordPress sanitizes a new option twice).
 *
 * @param string $setting The option.
 * @param string $message What is wrong.
 */
function formrelay_settings_error( $setting, $message ) {
	foreach ( get_settings_errors( $setting ) as $known ) {
		if ( $known['message'] === $message ) {
			return;
		}
	}
	add_settings_error( $setting, $setting, $message, 'error' );
}

function formrelay_section_intro() {
	echo '<p>' . esc_html__( 'The address of the formrelay relay your forms are sent to. Forms are built in the visitor’s browser from what the relay says about them, so your pages can be cached.', 'formrelay' ) . '</p>';
}

function formrelay_field_relay_url() {
	printf(
		'<input type="url" class="regular-text code" id="formrelay_relay_url" name="formrelay_relay_url" value="%s" placeholder="https://relay.example.org" aria-describedby="formrelay_relay_url_help"><p class="description" id="formrelay_relay_url_help">%s</p>',
		esc_attr( formrelay_relay_url() ),
		esc_html__( 'Starts with https:// (http:// only for localhost and 127.0.0.1, for testing).', 'formrelay' )
	);
}

function formrelay_field_other_relays() {
	printf(
		'<textarea class="large-text code" rows="3" id="formrelay_other_relays" name="formrelay_other_relays" aria-describedby="formrelay_other_relays_help">%s</textarea><p class="description" id="formrelay_other_relays_help">%s</p>',
		esc_textarea( implode( "\n", formrelay_other_relays() ) ),
		esc_html__( 'One address a line. Editors may send a form to one of these instead of your relay, with relay="…" in the shortcode or in the block’s settings; no other relay is accepted.', 'formrelay' )
	);
}

function formrelay_field_stylesheet() {
	printf(
		'<label><input type="checkbox" id="formrelay_stylesheet" name="formrelay_stylesheet" value="1" %s> %s</label>',
		checked( '0' !== get_option( 'formrelay_stylesheet', '1' ), true, false ),
		esc_html__( 'Use the relay’s stylesheet (formrelay.css) for the forms; untick to style them with your theme only.', 'formrelay' )
	);
}

/**
 * The "Test the connection" form's answer, when it was sent (nonce and manage_options checked when the
 * page loads); the page shows what the last call found.
 *
 * @return array|null The result and what was asked, or null when nothing was asked.
 */
function formrelay_test_connection() {
	static $done = false, $result = null;
	if ( ! $done ) {
		$done   = true;
		$result = formrelay_run_test_connection();
	}
	return $result;
}

/**
 * Ask the relay about the form named in the "Test the connection" form.
 *
 * @return array|null
 */
function formrelay_run_test_connection() {
	if ( ! isset( $_POST['formrelay_test_form'] ) ) {
		return null;
	}
	check_admin_referer( 'formrelay_test_connection', 'formrelay_test_nonce' );
	if ( ! current_user_can( 'manage_options' ) ) {
		wp_die( esc_html__( 'Sorry, you are not allowed to do that.', 'formrelay' ), 403 );
	}
	$slug  = trim( sanitize_text_field( wp_unslash( $_POST['formrelay_test_form'] ) ) );
	$relay = formrelay_relay_url();
	if ( '' === $relay ) {
		return array(
			'slug'    => $slug,
			'ok'      => false,
			'message' => __( 'Save the relay’s address first.', 'formrelay' ),
		);
	}
	if ( ! formrelay_valid_slug( $slug ) ) {
		return array(
			'slug'    => $slug,
			'ok'      => false,
			/* translators: %s: what was given as the form's name. */
			'message' => sprintf( __( '“%s” cannot be the name of a form: use letters, digits, dots, dashes and underscores.', 'formrelay' ), $slug ),
		);
	}
	$result = formrelay_describe( $relay, $slug, 5 );
	formrelay_remember( $relay, $slug, $result );
	return array(
		'slug'    => $slug,
		'ok'      => 'ok' === $result['status'],
		'message' => formrelay_explain( $result, $relay, $slug ),
	);
}

/**
 * This site's origin, as the relay's allowed_origins must list it.
 *
 * @return string
 */
function formrelay_site_origin() {
	$home = wp_parse_url( home_url() );
	$port = isset( $home['port'] ) ? ':' . $home['port'] : '';
	return ( isset( $home['scheme'] ) ? $home['scheme'] : 'https' ) . '://' . ( isset( $home['host'] ) ? $home['host'] : '' ) . $port;
}

function formrelay_settings_page() {
	if ( ! current_user_can( 'manage_options' ) ) {
		return;
	}
	$test = formrelay_test_connection();
	?>
	<div class="wrap">
		<h1><?php esc_html_e( 'formrelay settings', 'formrelay' ); ?></h1>
		<form action="options.php" method="post">
			<?php
			settings_fields( 'formrelay' );
			do_settings_sections( 'formrelay' );
			submit_button();
			?>
		</form>

		<h2><?php esc_html_e( 'Test the connection', 'formrelay' ); ?></h2>
		<p><?php esc_html_e( 'WordPress asks the relay about one of its forms, as the block’s preview does.', 'formrelay' ); ?></p>
		<?php if ( null !== $test ) : ?>
			<div id="formrelay-test-result" class="notice inline <?php echo $test['ok'] ? 'notice-success' : 'notice-error'; ?>"><p><?php echo esc_html( $test['message'] ); ?></p></div>
		<?php endif; ?>
		<form method="post" action="<?php echo esc_url( admin_url( 'options-general.php?page=formrelay' ) ); ?>">
			<?php wp_nonce_field( 'formrelay_test_connection', 'formrelay_test_nonce' ); ?>
			<p>
				<label for="formrelay_test_form"><?php esc_html_e( 'Form name', 'formrelay' ); ?></label>
				<input type="text" class="regular-text code" id="formrelay_test_form" name="formrelay_test_form" value="<?php echo esc_attr( null !== $test ? $test['slug'] : '' ); ?>" placeholder="join" required>
				<?php submit_button( __( 'Test the connection', 'formrelay' ), 'secondary', 'formrelay_test', false ); ?>
			</p>
		</form>

		<h2><?php esc_html_e( 'On the relay', 'formrelay' ); ?></h2>
		<p><?php esc_html_e( 'Visitors’ browsers fetch the forms from the relay and send them there, so the relay must allow this site’s origin. In the relay’s configuration file:', 'formrelay' ); ?></p>
		<pre><code><?php echo esc_html( "[relay]\nallowed_origins = [\"" . formrelay_site_origin() . "\"]" ); ?></code></pre>
		<p><?php esc_html_e( 'Nothing else is needed on the relay. If your site sends a Content-Security-Policy, it must allow the relay in script-src and connect-src (and style-src for the stylesheet).', 'formrelay' ); ?></p>
		<h2><?php esc_html_e( 'Adding a form to a page', 'formrelay' ); ?></h2>
		<p><?php esc_html_e( 'Add the “formrelay form” block, or the shortcode [formrelay form="join"], where join is the form’s name on the relay.', 'formrelay' ); ?></p>
	</div>
	<?php
}
