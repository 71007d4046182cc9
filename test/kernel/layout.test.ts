import { ALL_LAYOUTS, HEADER_CONSTANTS } from '../../src/kernel/layout';
import { describeHeaderMirror } from '../helpers/header-mirror';

describeHeaderMirror({
  header: 'bpf/include/sigil.h',
  layouts: ALL_LAYOUTS,
  constants: HEADER_CONSTANTS,
});
